"""The VehicleWorld catalog (arXiv 2509.06736, Sec. 3): every module's properties and APIs as data, grouped by
the paper's four task splits. `load_schema()` builds and checks it once per process."""

from __future__ import annotations

import functools

from agents.vehicle.catalog import car, lights, multimedia, touch
from agents.vehicle.schema import Schema

MODULES = multimedia.MODULES + touch.MODULES + car.MODULES + lights.MODULES


@functools.lru_cache(maxsize=1)
def load_schema() -> Schema:
  return Schema(MODULES)
