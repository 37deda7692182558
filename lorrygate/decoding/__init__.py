"""Decoding: payloads become records through a chain of decoders."""

from typing import Any

from lorrygate.decoding.binary import CborDecoder, MessagePackDecoder, MuonDecoder
from lorrygate.decoding.chain import DecoderChain
from lorrygate.decoding.functions import decoder
from lorrygate.decoding.industrial import KepwareDecoder, NeuronDecoder, ThingsBoardDecoder
from lorrygate.decoding.jsonobject import JsonDecoder
from lorrygate.decoding.lineprotocol import InfluxDecoder, TelegrafJsonDecoder
from lorrygate.decoding.meshtastic import MeshtasticDecoder
from lorrygate.decoding.rtl433 import Rtl433Decoder
from lorrygate.decoding.ruuvi import RuuviDecoder
from lorrygate.decoding.senml import SenmlDecoder
from lorrygate.decoding.sparkplug import SparkplugDecoder
from lorrygate.decoding.text import CsvDecoder, KeyValueDecoder, NdjsonDecoder, RawDecoder, ValueDecoder
from lorrygate.decoding.vendors import (
    AhoyDecoder,
    AirrohrDecoder,
    ChirpStackDecoder,
    EcowittDecoder,
    EsphomeDecoder,
    HomeAssistantDecoder,
    HomieDecoder,
    OpenMqttGatewayDecoder,
    OwnTracksDecoder,
    ShellyDecoder,
    TasmotaDecoder,
    TtnDecoder,
    Zigbee2MqttDecoder,
)
from lorrygate.decoding.victron import VictronDecoder

#: built-in decoders by the name a chain selects them with
DECODERS: dict[str, Any] = {
    "json": JsonDecoder,
    "ndjson": NdjsonDecoder,
    "csv": CsvDecoder,
    "kv": KeyValueDecoder,
    "influx": InfluxDecoder,
    "telegraf": TelegrafJsonDecoder,
    "value": ValueDecoder,
    "tasmota": TasmotaDecoder,
    "airrohr": AirrohrDecoder,
    "ttn": TtnDecoder,
    "chirpstack": ChirpStackDecoder,
    "ecowitt": EcowittDecoder,
    "homie": HomieDecoder,
    "homeassistant": HomeAssistantDecoder,
    "esphome": EsphomeDecoder,
    "owntracks": OwnTracksDecoder,
    "shelly": ShellyDecoder,
    "zigbee2mqtt": Zigbee2MqttDecoder,
    "sparkplug": SparkplugDecoder,
    "victron": VictronDecoder,
    "rtl_433": Rtl433Decoder,
    "openmqttgateway": OpenMqttGatewayDecoder,
    "ahoy": AhoyDecoder,
    "ruuvi": RuuviDecoder,
    "meshtastic": MeshtasticDecoder,
    "kepware": KepwareDecoder,
    "neuron": NeuronDecoder,
    "thingsboard": ThingsBoardDecoder,
    "senml": SenmlDecoder,
    "msgpack": MessagePackDecoder,
    "cbor": CborDecoder,
    "muon": MuonDecoder,
    "raw": RawDecoder,
}

__all__ = ["DECODERS", "DecoderChain", "JsonDecoder", "decoder"]
