"""Topology strategies: a topic becomes an address, an address a table."""

from lorrygate.topology.anytopic import TopicStrategy
from lorrygate.topology.emon import EmonStrategy
from lorrygate.topology.fleets import (
    ChirpStackStrategy,
    EsphomeStrategy,
    HomeAssistantStrategy,
    HomieStrategy,
    OwnTracksStrategy,
    ShellyStrategy,
    SparkplugStrategy,
    TasmotaStrategy,
    TtnStrategy,
    Zigbee2MqttStrategy,
)
from lorrygate.topology.inverters import AhoyStrategy, OpenDtuStrategy
from lorrygate.topology.lan import LanStrategy
from lorrygate.topology.meshtastic import MeshtasticStrategy
from lorrygate.topology.openmqttgateway import OpenMqttGatewayStrategy
from lorrygate.topology.rtl433 import Rtl433Strategy
from lorrygate.topology.ruuvi import RuuviStrategy
from lorrygate.topology.victron import VictronStrategy
from lorrygate.topology.wan import WanStrategy

#: built-in strategies by the name a channel selects them with
STRATEGIES = {
    "wan": WanStrategy,
    "lan": LanStrategy,
    "tasmota": TasmotaStrategy,
    "homie": HomieStrategy,
    "ttn": TtnStrategy,
    "chirpstack": ChirpStackStrategy,
    "zigbee2mqtt": Zigbee2MqttStrategy,
    "shelly": ShellyStrategy,
    "homeassistant": HomeAssistantStrategy,
    "esphome": EsphomeStrategy,
    "owntracks": OwnTracksStrategy,
    "sparkplug": SparkplugStrategy,
    "victron": VictronStrategy,
    "rtl_433": Rtl433Strategy,
    "openmqttgateway": OpenMqttGatewayStrategy,
    "opendtu": OpenDtuStrategy,
    "ahoy": AhoyStrategy,
    "ruuvi": RuuviStrategy,
    "meshtastic": MeshtasticStrategy,
    "emon": EmonStrategy,
    "topic": TopicStrategy,
}

__all__ = ["STRATEGIES", "TemplateStrategy", "WanStrategy", "LanStrategy"]


def __getattr__(name: str):
    # templates (and pyparsing, ~40 ms at every start) only where a configuration uses them
    if name == "TemplateStrategy":
        from lorrygate.topology.template import TemplateStrategy

        return TemplateStrategy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
