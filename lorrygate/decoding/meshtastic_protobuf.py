"""
What a Meshtastic gateway node publishes to ``<root>/2/e/<channel>/<gateway>``: a ServiceEnvelope (Protocol
Buffers) around the packet as the node heard it, its payload the app's message (``Data``) or, with the MQTT
module's encryption on (its default), that message encrypted with the channel's key. Read with the schemas of
Meshtastic's own Python package (``meshtastic.protobuf``; ``pip install 'lorrygate[meshtastic]'``), into the
same names as the firmware's JSON output (`lorrygate.decoding.meshtastic`), so that a table reads the same
whichever a channel stores.

An encrypted packet is decrypted as the firmware does (``CryptoEngine``, ``Channels::getKey``): AES-CTR with the
channel's key, the nonce the packet id (64 bits, little-endian), the sending node (32 bits) and four zero bytes;
a key of one byte ``n`` (``AQ==``, the default channel's) is the firmware's default key with ``n - 1`` added to
its last byte. The packet's ``channel`` is then the channel's hash (the XOR of the name's bytes and the key's),
which tells a key that is not the channel's before anything is decrypted.
"""

import base64
import functools
import struct

from lorrygate.errors import DecodeError, Ignored

#: the firmware's default channel key (``defaultpsk``), whose one-byte form is ``AQ==``
DEFAULT_KEY = bytes.fromhex("d4f1bb3a20290759f0bcffabcf4e6901")
#: the channel of direct messages, encrypted for their recipient's public key
PKI = "PKI"
_INSTALL = "pip install 'lorrygate[meshtastic]'"
#: the firmware JSON output's names of the telemetry values it renames
_RENAMED = {"pm10_standard": "pm10", "pm25_standard": "pm25", "pm100_standard": "pm100",
            "pm10_environmental": "pm10_e", "pm25_environmental": "pm25_e", "pm100_environmental": "pm100_e",
            **{f"ch{n}_{what}": f"{what}_ch{n}" for n in range(1, 9) for what in ("voltage", "current")},
            "long_name": "longname", "short_name": "shortname", "hw_model": "hardware",
            "wifi": "wifi_count", "ble": "ble_count"}
#: apps whose payload is text (a range test's: "seq 12"; the JSON output has none)
_TEXT = {"TEXT_MESSAGE_APP": "text", "DETECTION_SENSOR_APP": "detection", "RANGE_TEST_APP": "range_test"}
#: apps whose payload is one message: (the JSON output's type, the schema's module and message)
_MESSAGES = {"POSITION_APP": ("position", "mesh_pb2", "Position"), "NODEINFO_APP": ("nodeinfo", "mesh_pb2", "User"),
             "WAYPOINT_APP": ("waypoint", "mesh_pb2", "Waypoint"),
             "NEIGHBORINFO_APP": ("neighborinfo", "mesh_pb2", "NeighborInfo"),
             "PAXCOUNTER_APP": ("paxcounter", "paxcount_pb2", "Paxcount"),
             "TELEMETRY_APP": ("telemetry", "telemetry_pb2", "Telemetry"),
             "MAP_REPORT_APP": ("map_report", "mqtt_pb2", "MapReport")}


@functools.cache
def schemas():
    """Meshtastic's Protocol Buffers modules by name; DecodeError where its package is not installed."""
    try:
        from meshtastic.protobuf import (
            mesh_pb2,
            mqtt_pb2,
            paxcount_pb2,
            portnums_pb2,
            remote_hardware_pb2,
            telemetry_pb2,
        )
    except ImportError:
        raise DecodeError("meshtastic", f"a packet as protobuf needs Meshtastic's Python package: {_INSTALL}, "
                                        "or output = json to read the JSON topics") from None
    return {"mesh_pb2": mesh_pb2, "mqtt_pb2": mqtt_pb2, "paxcount_pb2": paxcount_pb2, "portnums_pb2": portnums_pb2,
            "remote_hardware_pb2": remote_hardware_pb2, "telemetry_pb2": telemetry_pb2}


def expand_key(key: bytes) -> bytes:
    """A channel key as the firmware uses it: one byte ``n`` (1-255) the default key with ``n - 1`` added to its
    last byte, 0 or nothing no encryption (b""), a short key padded with zeros to 16 or 32 bytes."""
    if len(key) == 1:
        return b"" if key[0] == 0 else DEFAULT_KEY[:-1] + bytes([(DEFAULT_KEY[-1] + key[0] - 1) & 0xFF])
    if 0 < len(key) < 16:
        return key.ljust(16, b"\0")
    if 16 < len(key) < 32:
        return key.ljust(32, b"\0")
    return key


def parse_key(text: str) -> bytes:
    """A channel key as the app shows it (base64: ``AQ==``, or 16 or 32 bytes); ValueError if it is none."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise ValueError("a channel key is base64, as the Meshtastic app shows it (AQ==, or 16 or 32 bytes)") from None
    if len(key) not in (1, 16, 32):
        raise ValueError(f"a channel key of {len(key)} bytes: it has 1 (AQ==), 16 or 32")
    return key


def _xor(data: bytes) -> int:
    result = 0
    for byte in data:
        result ^= byte
    return result


def channel_hash(name: str, key: bytes) -> int:
    """The channel number an encrypted packet carries: the XOR of the channel name's bytes and of its key's."""
    return _xor(name.encode()) ^ _xor(key)


def decrypt(encrypted: bytes, key: bytes, packet_id: int, sender: int) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    nonce = struct.pack("<QI", packet_id, sender) + bytes(4)
    decryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).decryptor()
    return decryptor.update(encrypted) + decryptor.finalize()


def float32(value: float) -> float:
    """A 32-bit float as the shortest decimal that is that float (48.2, not 48.20000076293945)."""
    if value != value or value in (float("inf"), float("-inf")):
        return value
    single = struct.Struct("<f")
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if single.unpack(single.pack(candidate))[0] == value:
            return candidate
    return value


def message_values(message) -> dict:
    """The values a message has, by name: enums as numbers, 32-bit floats as their shortest decimals, messages as
    objects, repeated ones as lists; bytes (keys, MAC addresses) left out."""
    values = {}
    for field, value in message.ListFields():
        if field.type == field.TYPE_BYTES:
            continue
        # (protobuf 6 and later have is_repeated; label is gone from 7)
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if field.type == field.TYPE_MESSAGE:
            value = [message_values(item) for item in value] if repeated else message_values(value)
        elif field.type == field.TYPE_FLOAT:
            value = [float32(item) for item in value] if repeated else float32(value)
        elif repeated:
            value = list(value)
        values[_RENAMED.get(field.name, field.name)] = value
    return values


def read_envelope(payload: bytes, keys: dict, topic: str):
    """``(packet, gateway id, type, values)`` of a ServiceEnvelope: the MeshPacket, the JSON output's type of its
    app, the app message's values; Ignored for an app without values, DecodeError for what cannot be read."""
    from google.protobuf.message import DecodeError as ProtobufError

    modules = schemas()
    envelope = modules["mqtt_pb2"].ServiceEnvelope()
    try:
        envelope.ParseFromString(payload)
    except ProtobufError as exc:
        raise DecodeError("meshtastic", f"not a Meshtastic ServiceEnvelope (protobuf): {exc}") from None
    if not envelope.HasField("packet"):
        raise DecodeError("meshtastic", "a ServiceEnvelope without its packet")
    packet = envelope.packet
    variant = packet.WhichOneof("payload_variant")
    if variant == "encrypted":
        data = _decrypted(packet, envelope.channel_id, keys, topic, modules)
    elif variant == "decoded":
        data = packet.decoded
    else:
        raise DecodeError("meshtastic", "a packet without a payload")
    kind, values = _app_values(data, topic, modules)
    return packet, envelope.gateway_id, kind, values


def _decrypted(packet, channel: str, keys: dict, topic: str, modules):
    from google.protobuf.message import DecodeError as ProtobufError

    if channel == PKI or packet.pki_encrypted:
        raise Ignored("meshtastic", topic, "a direct message encrypted for its recipient: only that node can read it")
    given = keys.get(channel.lower())
    key = expand_key(given if given is not None else b"\x01")
    if channel_hash(channel, key) != packet.channel:
        if given is not None:
            raise DecodeError("meshtastic", f"encrypted with another key than the one keys gives channel {channel!r}: "
                                            "give its key as the app shows it, and replay this dead letter")
        raise DecodeError("meshtastic", f"encrypted with channel {channel!r}'s own key: give it as keys = "
                                        f"{channel}:<its key as the app shows it> in a [decoder:NAME] of type "
                                        "meshtastic that the channel's decoders name, and replay this dead letter; "
                                        "a mesh channel that is not yours (on a public broker): leave it out of the "
                                        "topics, subscribing to .../2/e/<your channel>/#")
    data = modules["mesh_pb2"].Data()
    try:
        data.ParseFromString(decrypt(packet.encrypted, key, packet.id, getattr(packet, "from")) if key
                             else packet.encrypted)
    except ProtobufError:
        raise DecodeError("meshtastic", f"does not decrypt with channel {channel!r}'s key") from None
    return data


def _app_values(data, topic: str, modules) -> tuple:
    from google.protobuf.message import DecodeError as ProtobufError

    try:
        app = modules["portnums_pb2"].PortNum.Name(data.portnum)
    except ValueError:
        app = f"app {data.portnum}"
    if app in _TEXT:
        return _TEXT[app], {"text": data.payload.decode("utf-8", "backslashreplace")}
    if app == "TRACEROUTE_APP" and data.request_id:
        kind, module, name = "traceroute", "mesh_pb2", "RouteDiscovery"
    elif app == "REMOTE_HARDWARE_APP":
        kind, module, name = "", "remote_hardware_pb2", "HardwareMessage"
    elif app in _MESSAGES:
        kind, module, name = _MESSAGES[app]
    else:
        raise Ignored("meshtastic", topic, f"a packet of {app}, which carries no values lorrygate stores")
    schema = getattr(modules[module], name, None)
    if schema is None:  # (an older meshtastic package than the firmware)
        raise DecodeError("meshtastic", f"a packet of {app}, whose message ({name}) the installed meshtastic package "
                                        "does not know: pip install -U meshtastic, and replay this dead letter")
    message = schema()
    try:
        message.ParseFromString(data.payload)
    except ProtobufError as exc:
        raise DecodeError("meshtastic", f"the {app} payload is not its message: {exc}") from None
    values = message_values(message)
    if kind == "telemetry":
        # one of device_metrics, environment_metrics, ...: its values, beside the reading's own time
        variant = message.WhichOneof("variant")
        values = {**values.pop(variant, {}), **({"time": values["time"]} if "time" in values else {})}
    elif kind == "traceroute":
        values = {key: [f"!{node:08x}" for node in value] if key in ("route", "route_back") else
                  [snr / 4 for snr in value] for key, value in values.items()}
    elif kind == "":
        gpios = modules[module].HardwareMessage.Type.Name(message.type)
        if gpios not in ("GPIOS_CHANGED", "READ_GPIOS_REPLY"):
            raise Ignored("meshtastic", topic, f"a remote hardware {gpios}: a command, not a measurement")
        kind = "gpios_changed" if gpios == "GPIOS_CHANGED" else "gpios_read_reply"
        values.pop("type", None)
    return kind, values
