// Payload codec for the Dragino LHT65 temperature and humidity sensor
// (LoRaWAN uplinks on fPort 2), written from the device's documented frame:
//
//   bytes 0-1   battery: bits 15-14 status, bits 13-0 voltage in mV
//   bytes 2-3   built-in SHT20 temperature, signed, 1/100 degC
//   bytes 4-5   built-in SHT20 humidity, 1/10 %RH
//   byte  6     external sensor type (1 = DS18B20 temperature probe)
//   bytes 7-8   external temperature, signed, 1/100 degC (0x7FFF: none)
//   bytes 9-10  reserved
//
// The Things Stack payload formatter interface: decodeUplink({bytes, fPort}).
// Test vectors: dragino_lht65.vectors.json beside this file.

var EXTERNAL_SENSORS = {
  0: "No external sensor",
  1: "Temperature Sensor",
  4: "Interrupt Sensor",
  5: "Illumination Sensor",
  6: "ADC Sensor",
  7: "Interrupt Sensor count",
  8: "Interrupt Sensor count",
  9: "Temperature Sensor with timestamp",
};

function int16(high, low) {
  var value = (high << 8) | low;
  return value & 0x8000 ? value - 0x10000 : value;
}

function decodeUplink(input) {
  if (input.fPort !== 2) {
    return { errors: ["unknown FPort"] };
  }
  var b = input.bytes;
  if (b.length < 11) {
    return { errors: ["expected 11 bytes, got " + b.length] };
  }
  var battery = (b[0] << 8) | b[1];
  var data = {
    BatV: (battery & 0x3fff) / 1000,
    Bat_status: battery >> 14,
    TempC_SHT: int16(b[2], b[3]) / 100,
    Hum_SHT: ((b[4] << 8) | b[5]) / 10,
    Ext_sensor: EXTERNAL_SENSORS[b[6] & 0x7f] || "Unknown",
  };
  if ((b[6] & 0x7f) === 1 || (b[6] & 0x7f) === 9) {
    var external = int16(b[7], b[8]);
    data.TempC_DS = external === 0x7fff ? null : external / 100;
  }
  return { data: data, warnings: [], errors: [] };
}
