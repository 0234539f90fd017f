"""Real univariate time series bundled with PyPI `statsmodels` (`statsmodels.datasets`).

  - "co2": weekly atmospheric CO2 at Mauna Loa, Hawaii (ppmv), 1958-03-29 .. 2001-12-29, 2,284 weeks
    (Keeling & Whorf, Scripps flask samples).  The 59 weeks without a sample are filled by linear
    interpolation between the neighbouring weeks and flagged in "interpolated".
  - "sunspots": yearly mean sunspot number, 1700 .. 2008, 309 years (SIDC).
  - "nile": yearly flow of the Nile at Aswan (10^8 m^3), 1871 .. 1970, 100 years.
  - "elnino": monthly sea surface temperature of the El Nino region (deg C), January 1950 ..
    December 2010, 732 months, flattened from statsmodels' one-row-per-year table.

Each series is returned as read-only numpy arrays, cached for the process.
"""

from __future__ import annotations

import functools

import numpy as np

from core.data import errors, splits

TIME_SERIES = ("co2", "sunspots", "nile", "elnino")


def load_time_series(name: str) -> dict[str, np.ndarray]:
  """One statsmodels time series (see the module docstring for each), oldest first.

  Returns (read-only, cached), all of length T:
    "value": float32 [T], the observations (finite; interpolated where "interpolated" is set).
    "time": datetime64[D] [T], when each observation was taken: the week-ending Saturday for
      "co2", January 1st of the year for "sunspots" and "nile", the 1st of the month for "elnino".
    "year": float64 [T], "time" as a decimal year (e.g. 1958.24), convenient for regressions.
    "interpolated": bool [T], True where the source had no value (only "co2" has such weeks).
  """
  if name not in TIME_SERIES:
    raise ValueError(f"Unknown time series {name!r}; choose one of {TIME_SERIES}.")
  datasets = errors.import_source_module(f"statsmodels.datasets.{name}", what=f"The {name!r} time series",
                                         install=errors.pip_install_hint("statsmodels"))
  return dict(_time_series(name, datasets))


def _decimal_year(time: np.ndarray) -> np.ndarray:
  years = time.astype("datetime64[Y]")
  start = years.astype("datetime64[D]")
  length = (years + 1).astype("datetime64[D]") - start
  return years.astype(np.int64) + 1970 + (time - start) / length


@functools.lru_cache(maxsize=None)
def _time_series(name: str, datasets) -> dict[str, np.ndarray]:
  frame = datasets.load_pandas().data
  if name == "co2":
    time = frame.index.values.astype("datetime64[D]")
    raw = frame["co2"].to_numpy(np.float64)
  elif name == "sunspots":
    time = _years(frame["YEAR"])
    raw = frame["SUNACTIVITY"].to_numpy(np.float64)
  elif name == "nile":
    time = _years(frame["year"])
    raw = frame["volume"].to_numpy(np.float64)
  else:  # elnino: one row per year, columns JAN..DEC.
    months = frame.drop(columns="YEAR").to_numpy(np.float64)
    first = np.datetime64(f"{int(frame['YEAR'].iloc[0])}-01", "M")
    time = (first + np.arange(months.size)).astype("datetime64[D]")
    raw = months.reshape(-1)
  missing = np.isnan(raw)
  if missing.all():
    raise ValueError(f"Time series {name!r} has no observations.")
  value = raw.copy()
  # Interpolate in time, not in position, so a gap is bridged by a straight line whatever the spacing.
  days = time.astype(np.int64)
  value[missing] = np.interp(days[missing], days[~missing], raw[~missing])
  return splits.read_only({"value": value.astype(np.float32), "time": time, "year": _decimal_year(time),
                           "interpolated": missing})


def _years(column) -> np.ndarray:
  return np.array([f"{int(y)}-01-01" for y in column], "datetime64[D]")
