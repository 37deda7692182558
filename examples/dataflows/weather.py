"""A Hamilton dataflow for lorrygate's ``[transform:weather]`` (docs/transform.rst).

Each function is a column: its parameters name the columns (or constants) it
is computed from. ``temperature`` and ``humidity`` are the records' fields,
pandas Series indexed by the rows' times; ``window`` is a constant.
"""

import numpy as np
import pandas as pd


def dew_point(temperature: pd.Series, humidity: pd.Series) -> pd.Series:
    """The dew point in °C (Magnus formula, Sonntag's constants)."""
    gamma = np.log(humidity / 100.0) + 17.62 * temperature / (243.12 + temperature)
    return (243.12 * gamma / (17.62 - gamma)).round(2)


def temperature_mean(temperature: pd.Series, window: int = 5) -> pd.Series:
    """The mean of the node's last ``window`` temperatures (the rows of earlier messages included)."""
    return temperature.rolling(window, min_periods=1).mean().round(3)
