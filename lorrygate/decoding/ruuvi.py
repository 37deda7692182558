"""
Ruuvi Gateway's MQTT messages (the ``ruuvi`` strategy's ``<base>/<gateway>/<sensor MAC>`` topics): one record an
advertisement relayed, at its ``ts`` (when the gateway heard it; the receive time where the gateway has no clock
and sends ``cnt``).

The gateway sends the advertisement as hex (``data``, its MQTT data format "raw", the default), the values it
decoded itself (``raw_and_decoded``, ``decoded``), or both. A RuuviTag's data format 5 (RAWv2) in ``data`` is
decoded here into the names, units and precision the gateway gives (``temperature`` in °C to 0.005,
``humidity`` in % to 0.0025, ``pressure`` in Pa, ``accelX`` in g, ``voltage`` in V, ``txPower``,
``movementCounter``, ``measurementSequenceNumber``, ``dataFormat``), so that a fleet of gateways in either mode
fills the same columns; the hex is then left out. A value the tag marks as not available is left out. So is data
format 3 (RAWv1, the tags' firmware before 2.x: ``temperature`` to 0.01 °C, ``humidity`` to 0.5 %, ``pressure``,
``accelX``/``Y``/``Z``, ``voltage``). Any other advertisement (another data format, another device) keeps its
``data``. ``aoa`` (always empty), an empty
``coords``, the gateway's MAC where the topic names it and the sensor's ``id`` where it is the topic's MAC are
left out: the table and the ``mac`` column hold them.

The Python libraries that decode RuuviTag data (``ruuvitag-sensor``, ``ruuvi_decoders``) round the temperature
to 0.01 °C and the humidity to 0.01 % (a reading of 24.305 °C is stored as 24.3) and give other units than the
gateway (hPa, mG, mV); ``ruuvitag-sensor`` also needs a Bluetooth stack (``bleak``). Data format 5 is 24 bytes
of fixed layout (docs.ruuvi.com, "Data format 5 (RAWv2)"), format 3 14 ("Data format 3 (RAWv1)"), decoded here with
`struct`.
"""

import struct
from typing import Any

import attrs
from zope.interface import implementer

from lorrygate.decoding.jsonobject import loads
from lorrygate.decoding.records import received_ns
from lorrygate.decoding.timestamps import from_epoch
from lorrygate.errors import Declined, DecodeError
from lorrygate.interfaces import IDecoder
from lorrygate.model import EVENT, Record

#: Ruuvi Innovations' Bluetooth company identifier, as the advertisement has it (little-endian 0x0499)
RUUVI_COMPANY = b"\x99\x04"
#: data format 5: format, temperature, humidity, pressure, acceleration x/y/z, power info, movement counter,
#: measurement sequence number, MAC address
_DF5 = struct.Struct(">BhHHhhhHBH6s")
#: data format 3 (RAWv1, the firmware before 2.x): format, humidity, temperature's sign and degrees, its
#: hundredths, pressure, acceleration x/y/z, battery voltage
_DF3 = struct.Struct(">BBBBHhhhH")


def manufacturer_data(advertisement: bytes) -> bytes | None:
    """The manufacturer specific data of Ruuvi's company in a Bluetooth advertisement (its AD structures: a
    length, a type, the data), without the company identifier; None if there is none or the structures do not
    add up."""
    at = 0
    while at < len(advertisement):
        length = advertisement[at]
        if length == 0:
            return None
        structure = advertisement[at + 1:at + 1 + length]
        if len(structure) < length:
            return None
        if structure[0] == 0xFF and structure[1:3] == RUUVI_COMPANY:
            return structure[3:]
        at += 1 + length
    return None


def data_format_3(data: bytes) -> dict | None:
    """A RuuviTag's data format 3 (RAWv1) under the names and units of `data_format_5`; None if ``data`` is not it.
    The format marks no value as not available."""
    if len(data) < _DF3.size or data[0] != 3:
        return None
    (_, humidity, degrees, hundredths, pressure, x, y, z, battery) = _DF3.unpack_from(data)
    temperature = round((degrees & 0x7F) + hundredths / 100, 2)
    return {"dataFormat": 3, "temperature": -temperature if degrees & 0x80 else temperature, "humidity": humidity / 2,
            "pressure": pressure + 50_000, "accelX": x / 1000, "accelY": y / 1000, "accelZ": z / 1000,
            "voltage": battery / 1000}


def data_format_5(data: bytes) -> dict | None:
    """A RuuviTag's data format 5 as the Ruuvi Gateway names and scales its values; None if ``data`` is not it."""
    if len(data) < _DF5.size or data[0] != 5:
        return None
    (_, temperature, humidity, pressure, x, y, z, power, movements, sequence, mac) = _DF5.unpack_from(data)
    values: dict[str, Any] = {"dataFormat": 5}
    if temperature != -32768:
        values["temperature"] = temperature / 200
    if humidity != 0xFFFF:
        values["humidity"] = humidity / 400
    if pressure != 0xFFFF:
        values["pressure"] = pressure + 50_000
    for name, value in (("accelX", x), ("accelY", y), ("accelZ", z)):
        if value != -32768:
            values[name] = value / 1000
    if power >> 5 != 0x7FF:
        values["voltage"] = ((power >> 5) + 1600) / 1000
    if power & 0x1F != 0x1F:
        values["txPower"] = (power & 0x1F) * 2 - 40
    if movements != 0xFF:
        values["movementCounter"] = movements
    if sequence != 0xFFFF:
        values["measurementSequenceNumber"] = sequence
    if mac != b"\xff" * 6:
        values["id"] = ":".join(f"{byte:02X}" for byte in mac)
    return values


@implementer(IDecoder)
@attrs.frozen
class RuuviDecoder:
    """Ruuvi Gateway's relayed advertisements; see the module's docstring."""

    name: str = "ruuvi"
    timezone: Any = None

    def decode(self, message, address) -> list:
        mac = dict(address.labels).get("mac") if address is not None else None
        if mac is None or address.kind == EVENT:
            raise Declined("not a Ruuvi Gateway sensor's topic (<base>/<gateway>/<sensor MAC>)")
        try:
            document = loads(message.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(self.name, f"not JSON ({exc}): a Ruuvi Gateway relays each advertisement as a JSON "
                                         "object") from None
        if type(document) is not dict:
            raise DecodeError(self.name, f"a JSON {type(document).__name__}, not the object a Ruuvi Gateway sends")
        fields = dict(document)
        time = self._time(fields.pop("ts", None), message)
        raw = fields.get("data")
        if type(raw) is str and "dataFormat" not in fields:
            try:
                advertisement = bytes.fromhex(raw)
            except ValueError:
                raise DecodeError(self.name, f"data {raw[:80]!r} is not hex, as the gateway sends an advertisement"
                                  ) from None
            ruuvi = manufacturer_data(advertisement)
            decoded = (data_format_5(ruuvi) or data_format_3(ruuvi)) if ruuvi is not None else None
            if decoded is not None:
                del fields["data"]
                fields.update(decoded)
        if fields.get("aoa") == []:
            del fields["aoa"]
        if fields.get("coords") == "":
            del fields["coords"]
        if type(fields.get("gw_mac")) is str and fields["gw_mac"].upper() == (address.gateway or "").upper():
            del fields["gw_mac"]
        if type(fields.get("id")) is str and fields["id"].upper() == mac.upper():
            del fields["id"]
        return [Record(time, fields)]

    def _time(self, ts, message) -> int:
        """``ts`` (epoch seconds, a number or, in the gateway's first releases, text) as the time."""
        if type(ts) is str and ts.isascii() and ts.isdigit():
            ts = int(ts)
        if type(ts) in (int, float) and ts > 0:
            try:
                return from_epoch(ts)
            except ValueError:
                pass
        if ts is not None and not (type(ts) is int and ts == 0):
            raise DecodeError(self.name, f"ts {ts!r} is not the epoch seconds a Ruuvi Gateway sends")
        return received_ns(message)
