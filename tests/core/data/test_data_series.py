"""statsmodels time series: schema, NaN filling and the missing-package error."""

import sys

import numpy as np
import pytest

from core import data


def _check_schema(series, length):
  assert set(series) == {"value", "time", "year", "interpolated"}
  for column in series.values():
    assert column.shape == (length,)
  assert series["value"].dtype == np.float32 and np.isfinite(series["value"]).all()
  assert series["time"].dtype == np.dtype("datetime64[D]")
  assert series["year"].dtype == np.float64 and np.all(np.diff(series["year"]) > 0)
  assert series["interpolated"].dtype == bool


def test_co2_weekly_with_interpolated_gaps():
  co2 = data.load_time_series("co2")
  _check_schema(co2, 2284)
  assert co2["time"][0] == np.datetime64("1958-03-29") and co2["time"][-1] == np.datetime64("2001-12-29")
  assert np.all(np.diff(co2["time"]) == np.timedelta64(7, "D"))
  assert co2["interpolated"].sum() == 59
  assert 310 < co2["value"].min() and co2["value"].max() < 380
  # Filled weeks lie on the straight line between the nearest observed weeks.
  value, filled = co2["value"].astype(np.float64), co2["interpolated"]
  for i in np.flatnonzero(filled)[:10]:
    lo = i - 1 - np.argmax(~filled[i - 1::-1])
    hi = i + 1 + np.argmax(~filled[i + 1:])
    expected = value[lo] + (value[hi] - value[lo]) * (i - lo) / (hi - lo)
    np.testing.assert_allclose(value[i], expected, rtol=1e-6)
  np.testing.assert_allclose(co2["year"][0], 1958 + 87 / 365, atol=1e-9)  # March 29 is day 88


def test_sunspots_yearly():
  sun = data.load_time_series("sunspots")
  _check_schema(sun, 309)
  np.testing.assert_array_equal(sun["year"], np.arange(1700, 2009))
  assert not sun["interpolated"].any()
  assert sun["value"].min() >= 0 and sun["value"].max() > 150


@pytest.mark.parametrize("name,length", [("nile", 100), ("elnino", 732)])
def test_other_series(name, length):
  _check_schema(data.load_time_series(name), length)


def test_unknown_series_and_missing_package(monkeypatch):
  with pytest.raises(ValueError, match="co2"):
    data.load_time_series("gdp")
  monkeypatch.setitem(sys.modules, "statsmodels.datasets.co2", None)
  with pytest.raises(data.DataSourceMissingError, match="pip install statsmodels"):
    data.load_time_series("co2")
