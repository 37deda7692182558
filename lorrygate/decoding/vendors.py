"""
Vendor payload formats.

===============  ========================================================================
decoder          payload
===============  ========================================================================
tasmota          Tasmota ``tele/<device>/SENSOR`` and ``STATE`` JSON: nested sensor
                 objects flattened to dotted names (``ENERGY.Power``), a list of numbers
                 (one a channel or phase) one field a channel (``ENERGY.Power.0``), ``Time``
                 (device local time, read in the channel's timezone; ``Epoch`` beside it,
                 UTC, where TimeStamp 1 adds it) as the record time
                 (before 2016, a clock not set yet: the receive time);
                 ``STATE`` fields are named as Kotori names them, under ``Device.``
                 (``Device.Vcc``, ``Device.Wifi.RSSI``). Zigbee2Tasmota's ``ZbReceived``
                 (with or without ``Time``, the wrapper or the address key): a record a
                 Zigbee device, its attributes as fields (``Temperature``,
                 ``LinkQuality``), its short address ``Device`` and ``Name`` as tags; the
                 BLE sensors an ESP32 hears (MI32: objects with a ``mac``) a record a
                 sensor, its ``mac``, name and ``alias`` as tags
airrohr          airrohr / sensor.community JSON: ``sensordatavalues`` as fields,
                 ``esp8266id`` and ``software_version`` as tags
ttn              The Things Stack v3 uplink: ``uplink_message.decoded_payload`` as fields,
                 plus ``f_port``, ``f_cnt``, and ``rssi``/``snr`` of the best gateway
                 (``rssi_2`` where the decoded payload has its own ``rssi``, ...);
                 device, application, DevEUI and best gateway ids as tags; the time is
                 ``uplink_message.received_at`` (nanoseconds kept)
chirpstack       ChirpStack v4 uplink event: ``object`` as fields, plus ``fPort``,
                 ``fCnt`` and the best gateway's ``rssi``/``snr``; ``devEui``,
                 ``deviceName``, ``applicationName`` and gateway id as tags; ``time``.
                 ChirpStack v3 and LoRa App Server v2 uplinks the same (``object`` or
                 ``objectJSON``, ``loRaSNR``, ids in hex; ``publishedAt``)
owntracks        OwnTracks JSON: ``tst`` as the time, ``_type`` kept but for locations
homeassistant    Home Assistant's MQTT Statestream: a state as numbers are read,
                 ``unavailable`` and ``unknown`` as no value, the timestamps as text,
                 attributes as JSON
ecowitt          Fine Offset weather stations (Ecowitt, Ambient Weather, Froggit and others
                 of that maker) in their "Ecowitt" upload protocol: a form with
                 ``PASSKEY`` and ``stationtype``, which the HTTP source makes a JSON
                 object; picked by the ``ecowitt.json`` slot (``/api/<...>/ecowitt``).
                 ``PASSKEY`` (the station's key, derived from its MAC address) is never
                 stored; ``dateutc`` (``2023-02-20 16:02:19``, UTC; ``now``: the receive
                 time) is the record time; ``stationtype``, ``model`` and ``freq`` tags;
                 every other field a value as the station sends it (imperial units:
                 ``tempf``, ``baromrelin``, ``windspeedmph``)
openmqttgateway  OpenMQTTGateway's and Theengs Gateway's module messages (BLE devices,
                 the gateway's own state): the device's ``id``, ``model_id`` and ``model``
                 as tags, the rest as fields
ahoy             AhoyDTU's JSON objects on an inverter's topics of a field (``firmware``,
                 ``hardware``, ``radio_stat``) as that field's dotted fields
homie            Homie property values on ``homie/<device>/<node>/<property>`` topics:
                 ``true``/``false``, integers, floats, everything else as text; an
                 empty payload (a retained message cleared: a device removed) stores
                 nothing, a single NUL byte is the empty text (Homie 5)
===============  ========================================================================

"Best gateway" is the one with the highest RSSI (SNR breaks ties).
"""


import base64
import json
import re
from datetime import UTC
from typing import Any
from urllib.parse import parse_qsl

import attrs
from zope.interface import implementer

from lorrygate.decoding.jsonobject import loads
from lorrygate.decoding.recent import Recent
from lorrygate.decoding.records import named_values, object_record, received_ns, scalar
from lorrygate.decoding.text import payload_text
from lorrygate.decoding.timestamps import from_epoch, parse_time
from lorrygate.errors import Declined, DecodeError, Ignored
from lorrygate.interfaces import IDecoder
from lorrygate.model import EVENT, Events, Record, unused_name


def _json_object(payload: bytes, what: str) -> dict:
    try:
        document = loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Declined(f"not JSON: {exc}") from None
    if type(document) is not dict:
        raise Declined(f"not a {what} object")
    return document


def flatten(document: dict, prefix: str = "", out=None, depth: int = 32) -> dict:
    """Nested objects as dotted names, down to ``depth`` levels (an object nested deeper stays one value); a name
    an earlier one has (``{"a.b": 1, "a": {"b": 2}}``) gets ``_2``."""
    out = {} if out is None else out
    for key, value in document.items():
        name = f"{prefix}{key}"
        if type(value) is dict and depth > 1:
            flatten(value, name + ".", out, depth - 1)
        else:
            out[unused_name(out, name)] = value
    return out


def _best(gateways: list, rssi: str, snr: str):
    candidates = [g for g in gateways if isinstance(g, dict) and isinstance(g.get(rssi), (int, float))]
    if not candidates:
        return None
    return max(candidates, key=lambda g: (g[rssi], g.get(snr) if isinstance(g.get(snr), (int, float)) else float("-inf")))


@implementer(IDecoder)
@attrs.frozen
class TasmotaDecoder:
    name: str = "tasmota"
    timezone: Any = None

    def decode(self, message, address) -> list:
        document = _json_object(message.payload, "Tasmota")
        zigbee = _zigbee_devices(document)
        if zigbee is not None:
            time = self._time(document, message) if "Time" in document else received_ns(message)
            return [Record(time, _per_channel(flatten(fields)), tags) for fields, tags in zigbee]
        if "Time" not in document:
            raise Declined("no Tasmota 'Time' field")
        time = self._time(document, message)
        if address is not None and address.rest.endswith("STATE"):
            return [Record(time, {f"Device.{name}": value for name, value in _per_channel(flatten(document)).items()})]
        ble = [key for key, value in document.items() if type(value) is dict and _is_ble_mac(value.get("mac"))]
        if ble:
            return _ble_records(time, document, ble)
        return [Record(time, _per_channel(flatten(document)))]

    def _time(self, document: dict, message) -> int:
        """The record time of ``Time`` (popped), or the receive time. With ``TimeStamp 1`` Tasmota writes its
        local time and ``Epoch`` (UTC seconds) beside it: the epoch is the time (popped too), whatever the
        channel's timezone says of the local one."""
        stamp = document.pop("Time")
        epoch = document.get("Epoch")
        if type(epoch) is int and type(stamp) is str and 0 <= epoch < 2**33:
            del document["Epoch"]
            time = epoch * 10**9
            return received_ns(message) if time < _TASMOTA_VALID_TIME else time
        try:
            # (null, or empty text, is no time, as for every decoder: the receive time)
            no_time = stamp is None or (type(stamp) is str and not stamp.strip())
            time = received_ns(message) if no_time else parse_time(stamp, self.timezone)
        except ValueError as exc:
            raise DecodeError(self.name, f"field 'Time': {exc}") from None
        if time < _TASMOTA_VALID_TIME:
            time = received_ns(message)  # the time since boot, as 1970: the clock is not set yet
        return time


#: a BLE device's MAC address as Tasmota's MI32 driver writes it (``a4c138bb1b6e``)
_BLE_MAC = re.compile(r"[0-9A-Fa-f]{12}")


def _is_ble_mac(value) -> bool:
    return type(value) is str and _BLE_MAC.fullmatch(value) is not None


def _ble_records(time: int, document: dict, keys: list) -> list:
    """An ESP32's SENSOR report of the BLE sensors it hears (MI32, up to four a message: ``"ATCbb1b6e": {"mac":
    "a4c138bb1b6e", "Temperature": 21.9, ...}``): a record a sensor, its readings the fields (and the report's own
    values beside them, ``TempUnit``), its ``mac``, its name (the key) and its ``alias`` (BLEAlias) the tags, as
    Zigbee2Tasmota's devices are; a report's other objects (the ESP32's own sensors) one record more. As dotted
    fields a sensor each, thirty thermometers made 200 sparse columns of one table."""
    shared = {key: value for key, value in document.items() if type(value) is not dict}
    others = {key: value for key, value in document.items() if type(value) is dict and key not in keys}
    records = []
    for key in keys:
        fields = dict(document[key])
        tags = {"mac": fields.pop("mac"), "name": key}
        alias = fields.pop("alias", None)
        if alias is not None:
            tags["alias"] = str(alias)
        records.append(Record(time, _per_channel(flatten({**shared, **fields})), tags))
    if others:
        records.append(Record(time, _per_channel(flatten({**shared, **others}))))
    return records


#: a Zigbee device's short address as Zigbee2Tasmota writes it (``0x8F20``)
_ZIGBEE_ADDRESS = re.compile(r"0x[0-9A-Fa-f]{4}")


def _zigbee_devices(document: dict) -> list | None:
    """Zigbee2Tasmota's report of what its devices sent, as ``(fields, tags)`` a device (None: not one):
    ``{"ZbReceived": {"0x8F20": {"Device": "0x8F20", "Name": "Kitchen", "Temperature": 21.5, ...}}}``, keyed by
    the friendly name instead (``SetOption83``), without the address key (``SetOption119``: ``{"ZbReceived":
    {"Device": ...}}``) or without the wrapper (``SetOption100``: ``{"0x8F20": {...}}``, ``{"Device": ...}``);
    ``Time`` beside them is the record's. Older versions leave out ``Device`` (``Name``) where the key is the
    address (the name)."""
    found = document.get("ZbReceived")
    if found is None:
        # without the wrapper (SetOption100): only objects of Zigbee devices beside Time, or one without its key
        if "Device" in document:
            return [_zigbee_device(None, _without_time(document))] if _is_zigbee_address(document["Device"]) else None
        for key, value in document.items():
            if key != "Time" and (type(value) is not dict or not (_is_zigbee_address(key)
                                                                   or _is_zigbee_address(value.get("Device")))):
                return None  # (a plain SENSOR payload: nested sensors, DS18B20-1, ENERGY, ...)
        found = _without_time(document)
        if not found:
            return None
    elif type(found) is not dict or any(key not in ("ZbReceived", "Time") for key in document):
        return None  # (something else beside it: kept as it is)
    if _is_zigbee_address(found.get("Device")):
        return [_zigbee_device(None, found)]  # (no address key: SetOption119)
    if not found or not all(type(value) is dict for value in found.values()):
        return None
    return [_zigbee_device(key, value) for key, value in found.items()]


def _without_time(document: dict) -> dict:
    return {key: value for key, value in document.items() if key != "Time"}


def _is_zigbee_address(value) -> bool:
    return type(value) is str and _ZIGBEE_ADDRESS.fullmatch(value) is not None


def _zigbee_device(key: str | None, attributes: dict) -> tuple:
    fields = dict(attributes)
    tags = {}
    device, name = fields.pop("Device", None), fields.pop("Name", None)
    if device is None and _is_zigbee_address(key):
        device = key
    elif name is None and key is not None and not _is_zigbee_address(key):
        name = key
    if device is not None:
        tags["Device"] = str(device)
    if name is not None:
        tags["Name"] = str(name)
    return fields, tags


#: Tasmota's START_VALID_TIME (2016-01-01T00:00:00+01:00): a device whose clock NTP has not set yet reports the
#: time since its boot as 1970, and its time counts as valid from this one on
_TASMOTA_VALID_TIME = 1_451_602_800 * 10**9


def _per_channel(fields: dict) -> dict:
    """A list of numbers, one a channel or phase (a two-channel or three-phase device's ``"Power": [12, 0]``),
    as one field a channel from 0 (``ENERGY.Power.0``, ``ENERGY.Power.1``), as Telegraf's JSON parser names
    them: numbers that a database keeps as numbers, not one JSON text. Other lists stay as they are."""
    if not any(type(value) is list for value in fields.values()):
        return fields
    out: dict = {}
    for name, value in fields.items():
        if type(value) is list and value and all(type(item) in (int, float) for item in value):
            for index, item in enumerate(value):
                out[unused_name(out, f"{name}.{index}")] = item
        else:
            out[unused_name(out, name)] = value
    return out


@implementer(IDecoder)
@attrs.frozen
class AirrohrDecoder:
    name: str = "airrohr"
    timezone: Any = None

    def decode(self, message, address) -> list:
        document = _json_object(message.payload, "airrohr")
        values = document.get("sensordatavalues")
        if not isinstance(values, list):
            raise Declined("no 'sensordatavalues' list")
        fields = {}
        for index, item in enumerate(values):
            if not isinstance(item, dict) or "value_type" not in item or "value" not in item:
                raise DecodeError(self.name, f"sensordatavalues[{index}] needs value_type and value, got {item!r}")
            value = item["value"]
            fields[str(item["value_type"])] = scalar(value) if isinstance(value, str) else value
        tags = {key: str(document[key]) for key in ("esp8266id", "software_version") if key in document}
        return [Record(received_ns(message), fields, tags)]


@implementer(IDecoder)
@attrs.frozen
class TtnDecoder:
    name: str = "ttn"
    timezone: Any = None
    #: checked by the chain before parsing (this decoder runs first on WAN channels)
    requires = b"uplink_message"

    def decode(self, message, address) -> list:
        document = _json_object(message.payload, "The Things Stack uplink")
        uplink = document.get("uplink_message")
        if not isinstance(uplink, dict):
            raise Declined("no 'uplink_message' object")
        decoded = uplink.get("decoded_payload")
        if not isinstance(decoded, dict):
            raise Declined("no 'uplink_message.decoded_payload' (set a payload formatter, or decode frm_payload with a JavaScript decoder)")
        return [uplink_record(self, message, decoded, tts_envelope(document))]


#: what a Fine Offset station's upload carries that is no reading: its key (never stored) and its time
_ECOWITT_KEY, _ECOWITT_TIME = "PASSKEY", "dateutc"
#: what names the station, not a reading: tags
_ECOWITT_TAGS = ("stationtype", "model", "freq")


@implementer(IDecoder)
@attrs.frozen
class EcowittDecoder:
    name: str = "ecowitt"
    timezone: Any = None
    #: checked by the chain before parsing: every upload of the protocol has it
    requires = b"PASSKEY"

    def decode(self, message, address) -> list:
        payload = message.payload
        if payload.lstrip()[:1] == b"{":  # (the HTTP source's JSON of the form)
            document = _json_object(payload, "Fine Offset upload")
        else:  # the form as the station posts it, published as it came
            document = _form(payload)
        if _ECOWITT_KEY not in document:
            raise Declined("no field 'PASSKEY' (not a Fine Offset station's upload in its Ecowitt protocol)")
        stamp = document.get(_ECOWITT_TIME)
        if stamp is None or (isinstance(stamp, str) and stamp.strip().lower() in ("", "now")):
            time = received_ns(message)
        else:
            try:
                time = parse_time(stamp, UTC)
            except (ValueError, TypeError, OverflowError):
                raise DecodeError(self.name, f"dateutc {str(stamp)[:40]!r} is no time: the station sends its UTC "
                                             "time as 2023-02-20 16:02:19 (set its clock, or its time server)") from None
        tags = {key: str(document[key]) for key in _ECOWITT_TAGS if key in document}
        fields = {key: scalar(value) if isinstance(value, str) else value for key, value in document.items()
                  if key != _ECOWITT_KEY and key != _ECOWITT_TIME and key not in tags}
        return [Record(time, fields, tags)]


def _form(payload: bytes) -> dict:
    """An ``application/x-www-form-urlencoded`` body as a dict of its fields (each its last value, as the HTTP
    source takes a form)."""
    try:
        return dict(parse_qsl(payload.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                              errors="strict"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Declined(f"neither a JSON object nor a form (name=value&...): {exc}") from None


@implementer(IDecoder)
@attrs.frozen
class ChirpStackDecoder:
    name: str = "chirpstack"
    timezone: Any = None

    def decode(self, message, address) -> list:
        document = _json_object(message.payload, "ChirpStack uplink")
        info = document.get("deviceInfo")
        if not isinstance(info, dict):
            if "devEUI" not in document or "applicationID" not in document:
                raise Declined("no 'deviceInfo' object (ChirpStack v4), nor 'devEUI' and 'applicationID' (v3)")
            document = chirpstack_v3_as_v4(document, self.name)
        decoded = document.get("object")
        if not isinstance(decoded, dict):
            raise Declined("no decoded 'object' (set a codec in ChirpStack, or decode 'data' with a JavaScript decoder)")
        return [uplink_record(self, message, decoded, chirpstack_envelope(document))]


def chirpstack_v3_as_v4(document: dict, decoder: str) -> dict:
    """A ChirpStack v3 (or LoRa App Server v2) uplink in v4's shape, for `chirpstack_envelope`. v3's "json_v3"
    marshaler writes ids in hex and the decoded payload as ``object``; its "json" marshaler (protobuf's JSON)
    writes ids in base64 and the decoded payload as the text ``objectJSON``. The time is ``publishedAt`` (the
    application server's), else the best gateway's ``time``; gateways have ``loRaSNR`` for v4's ``snr``."""
    decoded = document.get("object")
    text = document.get("objectJSON")
    if decoded is None and isinstance(text, str) and text:
        try:
            decoded = loads(text.encode())
        except ValueError as exc:
            raise DecodeError(decoder, f"objectJSON is not JSON ({exc}): {text[:80]!r}") from None
    gateways = [{"gatewayId": _eui(g.get("gatewayID") or g.get("mac")), "rssi": g.get("rssi"), "snr": g.get("loRaSNR"),
                 "time": g.get("time")} for g in _list(document.get("rxInfo")) if isinstance(g, dict)]
    for gateway in gateways:
        if gateway["snr"] is None:
            del gateway["snr"]
    best = _best(gateways, "rssi", "snr")
    return {**{key: document[key] for key in ("fPort", "fCnt") if key in document}, "object": decoded,
            "deviceInfo": {"devEui": _eui(document.get("devEUI")), "deviceName": document.get("deviceName"),
                           "applicationName": document.get("applicationName")},
            "rxInfo": gateways, "time": document.get("publishedAt") or (best or {}).get("time")}


def _eui(value):
    """An EUI as v4 writes it, lower-case hex: protobuf's JSON writes bytes in base64 (``AgICAgICAgI=``)."""
    if not isinstance(value, str):
        return value
    if len(value) == 12 and value.endswith("="):
        try:
            return base64.b64decode(value, validate=True).hex()
        except ValueError:
            return value
    return value.lower() if len(value) == 16 else value


def _object(value) -> dict:
    """An envelope's object, or an empty one where the payload has something else there (a network server's
    envelope is not the device's to shape, but a payload that only looks like one may have anything)."""
    return value if type(value) is dict else {}


def _list(value) -> list:
    return value if type(value) is list else []


def tts_envelope(document: dict) -> tuple:
    """What a The Things Stack uplink says besides its payload: counters, ids, gateways, time."""
    uplink = _object(document.get("uplink_message"))
    ids = _object(document.get("end_device_ids"))
    tags = {
        "device_id": ids.get("device_id"),
        "dev_eui": ids.get("dev_eui"),
        "application_id": _object(ids.get("application_ids")).get("application_id"),
    }
    return ({key: uplink[key] for key in ("f_port", "f_cnt") if key in uplink}, tags,
            _list(uplink.get("rx_metadata")),
            ("gateway_id", lambda g: _object(g.get("gateway_ids")).get("gateway_id")),
            ("received_at", uplink.get("received_at") or document.get("received_at")))


def chirpstack_envelope(document: dict) -> tuple:
    """What a ChirpStack uplink event says besides its payload: counters, ids, gateways, time."""
    info = _object(document.get("deviceInfo"))
    tags = {key: info.get(key) for key in ("devEui", "deviceName", "applicationName")}
    return ({key: document[key] for key in ("fPort", "fCnt") if key in document}, tags,
            _list(document.get("rxInfo")), ("gatewayId", lambda g: g.get("gatewayId")),
            ("time", document.get("time")))


def uplink_record(decoder, message, decoded: dict, envelope: tuple) -> Record:
    """A LoRaWAN uplink's record from its decoded payload and its envelope (`tts_envelope`,
    `chirpstack_envelope`); the built-in decoders and JavaScript codecs keep the same."""
    return _uplink_record(decoder, message, decoded, dict(envelope[0]), dict(envelope[1]), *envelope[2:])


def _uplink_record(decoder, message, decoded: dict, counters: dict, tags: dict, gateways, gateway_id, stamp) -> Record:
    """A LoRaWAN uplink's record: decoded fields, port and counter, the best gateway's RSSI/SNR and id."""
    fields = flatten(decoded)
    # the envelope's values after the device's: a name the decoded payload has (a field tester's own ``rssi``)
    # keeps the device's value, and the envelope's gets ``_2``
    for name, value in counters.items():
        fields[unused_name(fields, name)] = value
    best = _best(gateways or [], "rssi", "snr")
    if best is not None:
        fields[unused_name(fields, "rssi")] = best["rssi"]
        if "snr" in best:
            fields[unused_name(fields, "snr")] = best["snr"]
        tags[gateway_id[0]] = gateway_id[1](best)
    key, value = stamp
    try:
        time = parse_time(value, decoder.timezone) if value else received_ns(message)
    except ValueError as exc:
        raise DecodeError(decoder.name, f"{key}: {exc}") from None
    # (a tag is text: an id that is something else, in a payload that only looks like an uplink, as its JSON)
    return Record(time, fields, {name: tag if type(tag) is str else json.dumps(tag, ensure_ascii=False)
                                 for name, tag in tags.items() if tag})


@implementer(IDecoder)
@attrs.frozen
class HomieDecoder:
    name: str = "homie"
    timezone: Any = None

    def decode(self, message, address) -> list:
        if address is None or address.field is None:
            raise Declined("not a Homie property topic")
        payload = message.payload
        if not payload:
            return []  # a cleared retained message, no value (Homie clears a removed device's topics so)
        text = "" if payload == b"\0" else payload_text(payload)
        value: Any
        if text in ("true", "false"):
            value = text == "true"
        else:
            value = scalar(text)
            if isinstance(value, bool):  # Homie booleans are lower case only
                value = text
        return [Record(received_ns(message), {address.field: value})]


#: the RPC notifications a Shelly Gen2 device sends of its status (changes, or all of it)
_SHELLY_STATUS = ("NotifyStatus", "NotifyFullStatus")


@implementer(IDecoder)
@attrs.frozen
class ShellyDecoder:
    """Shelly Gen2 RPC notifications on ``<prefix>/events/rpc``, the way a device reports unless "generic status
    update over MQTT" is set: ``NotifyStatus`` (what changed) and ``NotifyFullStatus`` as one record a component
    (``switch:0``, ``wifi``; its name in the ``component`` tag), as ``<prefix>/status/<component>`` gives them;
    ``NotifyEvent`` as one record an event (``{"event": "single_push"}`` of ``input:0``), in the device's events
    table (`Events`). Each at the device's ``ts``. Other methods are declined (the next decoder, json, stores them whole)."""

    name: str = "shelly"
    timezone: Any = None

    def decode(self, message, address) -> list:
        if address is None or not address.rest.endswith("events/rpc"):
            raise Declined("not a Shelly Gen2 <prefix>/events/rpc topic")
        document = _json_object(message.payload, "Shelly RPC notification")
        method, params = document.get("method"), document.get("params")
        if type(params) is not dict or (method not in _SHELLY_STATUS and method != "NotifyEvent"):
            raise Declined(f"not a status or event notification (method {method!r})")
        time = self._time(params.get("ts"), message)
        if method == "NotifyEvent":
            events = params.get("events")
            if type(events) is not list or not all(type(event) is dict for event in events):
                raise DecodeError(self.name, "a NotifyEvent whose params.events is not a list of objects")
            records = Events()  # (into the device's events table, not its status's)
            for event in events:
                fields = flatten({key: value for key, value in event.items() if key not in ("component", "ts")})
                component = event.get("component")
                tags = {"component": str(component)} if component is not None else {}
                records.append(Record(self._time(event["ts"], message) if "ts" in event else time, fields, tags))
            return records
        return [Record(time, flatten(status), {"component": component})
                for component, status in params.items() if type(status) is dict]

    def _time(self, stamp, message) -> int:
        if stamp is None:
            return received_ns(message)
        if type(stamp) not in (int, float):
            raise DecodeError(self.name, f"ts {stamp!r} is not epoch seconds")
        try:
            return from_epoch(stamp)
        except ValueError as exc:
            raise DecodeError(self.name, f"ts: {exc}") from None


@implementer(IDecoder)
@attrs.frozen
class OwnTracksDecoder:
    """OwnTracks JSON (``_type`` location, transition, lwt, card, waypoint, ...): the record's time is ``tst``
    (epoch seconds: when the phone took the location, which it may send hours later, after a time offline),
    else the receive time; ``_type`` is kept but for locations. An encrypted payload (``_type`` encrypted: a
    secret key set in the app) is a dead letter that says so."""

    name: str = "owntracks"
    timezone: Any = None

    def decode(self, message, address) -> list:
        document = _json_object(message.payload, "OwnTracks")
        kind = document.get("_type")
        if type(kind) is not str:
            raise Declined("no OwnTracks _type")
        if kind == "encrypted":
            raise DecodeError(self.name, "an encrypted OwnTracks payload (a secret key is set in the app): lorrygate "
                                         "cannot read it; clear the key in the app's settings to store the locations")
        if kind == "location":
            del document["_type"]
        stamp = document.pop("tst", None)
        if stamp is None:
            return [Record(received_ns(message), document)]
        if type(stamp) is str and stamp.isdigit() and stamp.isascii():
            stamp = int(stamp)  # (the waypoints of older apps' dumps: milliseconds as text)
        if type(stamp) not in (int, float) or not stamp > 0:
            raise DecodeError(self.name, f"tst {stamp!r} is not epoch seconds")
        try:
            return [Record(from_epoch(stamp), document)]
        except ValueError as exc:
            raise DecodeError(self.name, f"tst: {exc}") from None


#: the states Home Assistant gives an entity that has no state: no value
_HA_NO_STATE = ("unavailable", "unknown")


@implementer(IDecoder)
@attrs.frozen
class HomeAssistantDecoder:
    """Home Assistant's MQTT Statestream, on the ``homeassistant`` strategy's topics: the state as text is read
    as numbers are (``21.5``; ``on`` stays text), ``unavailable`` and ``unknown`` are no value (a row without the
    state, at the time the entity lost it; as text they made a numeric sensor's column TEXT, or a dead letter in
    PostgreSQL); ``last_changed`` and ``last_updated`` are ISO text; an attribute is JSON (``"°C"``, ``[1, 2]``,
    an object as dotted fields)."""

    name: str = "homeassistant"
    timezone: Any = None

    def decode(self, message, address) -> list:
        if address is None or address.field is None:
            raise Declined("not a Home Assistant statestream topic")
        key, payload = address.field, message.payload
        if not payload.strip():
            raise Declined("an empty payload")
        value: Any
        if key == "state":
            text = payload_text(payload).strip()
            value = None if text in _HA_NO_STATE else scalar(text)
        elif key in ("last_changed", "last_updated") or address.kind == EVENT:
            # (an event: Home Assistant's birth and last will, homeassistant/status, online or offline)
            value = payload_text(payload).strip()
        else:
            try:
                value = loads(payload)
            except (ValueError, UnicodeDecodeError) as exc:
                raise DecodeError(self.name, f"attribute {key!r} is not JSON, as Statestream writes attributes: "
                                             f"{exc}") from None
            if type(value) is dict:
                return [Record(received_ns(message), flatten({key: value}))]
        return [Record(received_ns(message), {key: value})]


class _FieldObject:
    """A JSON object on a topic a field as that field's dotted fields; anything else declined."""

    name: str
    #: what the topics are, for a decline's reason
    whose: str = ""

    def decode(self, message, address) -> list:
        if address is None or address.field is None or address.kind == EVENT:
            raise Declined(f"not {self.whose} topic")
        if message.payload.lstrip()[:1] != b"{":
            raise Declined("not a JSON object")
        try:
            document = loads(message.payload)
        except (ValueError, UnicodeDecodeError):
            raise Declined("not JSON") from None  # (a text sensor's text that starts with "{": value keeps it)
        if type(document) is not dict:
            raise Declined("not a JSON object")
        return [Record(received_ns(message), flatten({address.field: document}))]


@implementer(IDecoder)
@attrs.frozen
class EsphomeDecoder(_FieldObject):
    """ESPHome's states, on the ``esphome`` strategy's topics: a JSON object (a light's ``{"state": "ON",
    "brightness": 255}``, an event's ``{"event_type": "press"}``, an update's) is the field's dotted fields
    (``ceiling.state``, ``ceiling.brightness``: the keys alone made every light of a device share one ``state``
    column). Anything else is declined, for ``json`` and ``value`` (``21.5``; ``ON``; ``nan`` before a sensor's
    first reading is no value)."""

    name: str = "esphome"
    timezone: Any = None
    whose = "an ESPHome state"


#: how long an AhoyDTU alarm is known after it was last published, seconds: the DTU publishes its last ten again
#: with each new one, the same day or, with the date of the day, a later one
ALARM_MEMORY = 2 * 86_400.0


@implementer(IDecoder)
@attrs.frozen
class AhoyDecoder(_FieldObject):
    """AhoyDTU's JSON objects on an inverter's topics of a field (``<inverter>/firmware``, ``hardware``,
    ``radio_stat``) as the field's dotted fields (``firmware.version``, ``hardware.version``: the keys alone made
    two of them one ``version`` column). An alarm (``<inverter>/alarm/<n>``: ``code``, ``str``, ``start``, ``end``)
    that the DTU publishes again, as it does its last ten with each new one, is ignored: the same inverter, code
    and times of day (its ``start`` and ``end`` are seconds of the day, or in later firmware those plus the last
    midnight, so that an alarm published again the next day has that day's date) within `ALARM_MEMORY`; one that
    ended since (``end`` set) is a new row. Anything else is declined, for ``json`` (a channel's JSON, ``ch0``, at
    its ``ts``; an alarm's first publication) and ``value`` (``P_AC``'s ``120.3``)."""

    name: str = "ahoy"
    timezone: Any = None
    whose = "an AhoyDTU field's"
    _alarms: Recent = attrs.field(factory=lambda: Recent(ALARM_MEMORY, 10_000, refresh=True), init=False,
                                  repr=False, eq=False)

    def decode(self, message, address) -> list:
        if address is not None and address.kind == EVENT and address.rest.startswith("alarm/"):
            self._repeated_alarm(message, address)
        return _FieldObject.decode(self, message, address)

    def _repeated_alarm(self, message, address) -> None:
        """Ignored if ``message`` is an alarm the DTU published before (see the class's docstring)."""
        try:
            alarm = loads(message.payload)
        except (ValueError, UnicodeDecodeError):
            return
        if type(alarm) is not dict or not all(type(alarm.get(key)) is int for key in ("code", "start", "end")):
            return
        key = (address.node, alarm["code"], alarm["start"] % 86_400, alarm["end"] % 86_400)
        if self._alarms.again(key, message.received):
            raise Ignored(self.name, message.topic, f"alarm {alarm['code']} of {address.node} again: AhoyDTU "
                                                    "publishes its last alarms again with each new one")


#: the keys of an OpenMQTTGateway or Theengs Gateway message that name its device: the rows' tags
OPENMQTTGATEWAY_TAGS = ("id", "model_id", "model")


@implementer(IDecoder)
@attrs.frozen
class OpenMqttGatewayDecoder:
    """OpenMQTTGateway's and Theengs Gateway's JSON on the ``openmqttgateway`` strategy's module topics
    (``.../BTtoMQTT/<MAC>``, ``.../SYStoMQTT``, ...): one record, the device's ``id`` (its MAC address, or an
    iBeacon's UUID), ``model_id`` and ``model`` its tags (one table holds every device a gateway hears), the rest
    its fields, at the receive time (or a ``time`` of its own). ``RTL_433toMQTT``'s payloads are rtl_433's, and
    anything but a JSON object is no such message: declined, for ``rtl_433``, ``json`` and ``value``."""

    name: str = "openmqttgateway"
    timezone: Any = None

    def decode(self, message, address) -> list:
        if address is None or address.kind == EVENT or address.rest.startswith("RTL_433toMQTT"):
            raise Declined("not an OpenMQTTGateway module's topic (RTL_433toMQTT: rtl_433's events)")
        document = _json_object(message.payload, "OpenMQTTGateway")
        tags = {key: str(document.pop(key)) for key in OPENMQTTGATEWAY_TAGS
                if type(document.get(key)) in (str, int) and document[key] != ""}
        return [object_record(document, message, self.name, self.timezone, tags)]


@implementer(IDecoder)
@attrs.frozen
class Zigbee2MqttDecoder:
    """Zigbee2MQTT with ``advanced.output: attribute_and_json``: on a topic of several levels below the base
    (the strategy's ``attribute_or_state``), a payload of one value is the copy of a device's value in a topic of
    its own (``zigbee2mqtt/kitchen/temperature`` = ``21.5`` beside ``zigbee2mqtt/kitchen``'s JSON, which is
    stored): ignored. An object is a device's state (a friendly name with ``/``): declined, for ``json``."""

    name: str = "zigbee2mqtt"
    timezone: Any = None

    def decode(self, message, address) -> list:
        if address is None or address.rest != "attribute_or_state":
            raise Declined("not a Zigbee2MQTT topic of output = attribute_and_json")
        if message.payload.lstrip()[:1] == b"{":
            raise Declined("a device's JSON state")
        raise Ignored(self.name, message.topic, "a copy of a device's value in a topic of its own (Zigbee2MQTT's "
                                                "advanced.output: attribute_and_json): its JSON state is stored")


def object_or_decline(payload, message, decoder, tz, address=None):
    """Shared by the binary decoders: an object or a list of objects, else Declined. A value object on a topic
    that names its field is that field (`named_values`)."""
    payload = named_values(payload, address)
    if type(payload) is dict:
        return [object_record(payload, message, decoder, tz)]
    if type(payload) is list and payload and all(type(item) is dict for item in payload):
        return [object_record(item, message, decoder, tz) for item in payload]
    raise Declined(f"{_KINDS.get(type(payload)) or 'a ' + type(payload).__name__}, not an object")


#: what a decoded value is, for errors ("a int" was Python's name)
_KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a text", list: "a list",
          bytes: "bytes"}
