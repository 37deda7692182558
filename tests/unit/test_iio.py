"""Linux IIO devices read from a sysfs tree built as the kernel builds it."""

import pytest

from lorrygate.sources.periodic import read_iio


def device(root, number, files):
    directory = root / f"iio:device{number}"
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text + "\n")


@pytest.fixture
def root(tmp_path):
    return tmp_path / "iio"


def test_a_bme680_gives_its_processed_values_and_its_raw_one(root):
    """The BME680's driver gives temperature, pressure and humidity as processed values (in_*_input) and the gas
    resistance as raw: each is read (only the resistance was, before)."""
    device(root, 0, {"name": "bme680", "in_temp_input": "23450", "in_pressure_input": "101.325",
                     "in_humidityrelative_input": "41.233", "in_resistance_raw": "120000",
                     "in_temp_oversampling_ratio": "8"})
    assert read_iio(str(root)) == {"bme680": {"temp": 23450.0, "pressure": 101.325, "humidityrelative": 41.233,
                                              "resistance": 120000.0}}


def test_a_processed_value_is_taken_over_the_raw_one_of_its_channel(root):
    """A driver that gives both: the processed value is the value (the raw one with its scale gives the same
    units, when the driver has a scale; not every driver has)."""
    device(root, 0, {"name": "hdc100x", "in_temp_raw": "26000", "in_temp_input": "25123",
                     "in_humidityrelative_raw": "30000", "in_humidityrelative_scale": "1.52587890625"})
    assert read_iio(str(root)) == {"hdc100x": {"temp": 25123.0, "humidityrelative": 30000 * 1.52587890625}}


def test_a_raw_value_is_scaled_in_decimal_as_the_kernel_writes_its_scale(root):
    """A raw 3 of scale 0.100000000 was 0.30000000000000004 (float arithmetic); with an offset, raw 2 + offset
    0.1 of scale 0.1 was 0.21000000000000002. A file the kernel left empty, or NaN, is no value."""
    device(root, 0, {"name": "ads1015", "in_voltage0_raw": "3", "in_voltage_scale": "0.100000000",
                     "in_temp_raw": "2", "in_temp_offset": "0.1", "in_temp_scale": "0.1", "in_voltage1_raw": "",
                     "in_voltage2_raw": "nan", "in_voltage3_input": "1.10"})
    values = read_iio(str(root))["ads1015"]
    assert values == {"voltage0": 0.3, "temp": 0.21, "voltage3": 1.1}
    assert all(type(value) is float for value in values.values())
