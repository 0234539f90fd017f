"""Device logic of VehicleWorld that is not a plain requirement or implication (arXiv 2509.06736, Sec. 3: "APIs
... change state with device logic"): derived read-only readings, unit conversion of the shared environment,
climate sync, seat memory, radio seek.

Everything here acts through property writes or derivations, never through an API alone, so the state an API
call reaches is also reachable by writing properties (SFC, Sec. 4): the derived readings are recomputed from
writable properties after every change, and hooks fire on property writes whichever interface made them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from agents.vehicle.catalog.keys import PLACES, PLAYLISTS
from agents.vehicle.schema import Leaf, convert_temperature

if TYPE_CHECKING:
  from agents.vehicle.world import VehicleWorld, _Txn

# Ten tracks per playlist: (title, artist). Invented, so no real catalogue is implied.
_TRACK_WORDS = {
    "road_trip": ("Open Highway", "Mile Marker", "Desert Wind", "Coastline", "Night Drive", "Dusty Boots",
                  "Rear View", "Horizon Line", "Gas Station Coffee", "Last Exit"),
    "chill": ("Slow Tide", "Paper Lanterns", "Soft Focus", "Morning Fog", "Velvet Hours", "Quiet Harbor",
              "Low Clouds", "Warm Static", "Drift", "Blue Hour"),
    "workout": ("Full Sprint", "Iron Will", "Heartbeat", "Push Harder", "Red Line", "Power Up", "Breakaway",
                "Adrenaline", "Final Lap", "No Limits"),
    "classical": ("Sonata in C", "Spring Allegro", "Moonlit Adagio", "Winter Etude", "Minuet in G",
                  "Nocturne No. 2", "Royal Fanfare", "Pastoral Suite", "Rondo Brillante", "Requiem Aeternam"),
    "jazz": ("Blue Corner", "Smoky Room", "Late Train", "Brass Rain", "Walking Bass", "Midnight Swing",
             "Cool Breeze", "Velvet Trumpet", "Bebop Street", "Sunday Brunch"),
}
_ARTISTS = {"road_trip": "The Wanderers", "chill": "Lofi Harbor", "workout": "Pulse Engine",
            "classical": "City Chamber Orchestra", "jazz": "The Blue Quartet"}
TRACKS = {p: tuple((t, _ARTISTS[p]) for t in _TRACK_WORDS[p]) for p in PLAYLISTS}

# Known FM stations (MHz); station keys match the radio.favorite_station keys.
STATIONS = {88.1: "classic_fm", 90.5: "city_news", 93.7: "jazz_fm", 97.3: "rock_nation", 101.1: "pop_hits",
            104.5: "traffic_radio", 106.9: "country_roads"}

# Road distance in km from the car to each place, and the speed each route preference assumes (km/h).
DISTANCE_KM = dict(zip(PLACES, (12.4, 8.7, 38.2, 15.9, 6.3, 4.8, 9.5, 3.2, 2.1, 27.6, 11.0, 19.8)))
ROUTE_SPEED = {"fastest": 60.0, "shortest": 45.0, "eco": 50.0}
KM_PER_MILE = 1.609344

# Driver seat memory slots: position, backrest angle, height.
SEAT_MEMORY = {"1": (40, 100, 55), "2": (65, 110, 45), "3": (80, 118, 35)}


def _round1(x: float) -> float:
  return round(x + 1e-9, 1)


def derive(world: "VehicleWorld", txn: "_Txn") -> None:
  """Recomputes every derived reading from the writable state (after each call or patch operation)."""
  s = world.state
  title, artist = TRACKS[s["music.playlist"]][s["music.track_index"]]
  world.set_raw("music.track_title", title, txn, "derived")
  world.set_raw("music.artist", artist, txn, "derived")
  station = STATIONS.get(round(s["radio.frequency"], 1))
  world.set_raw("radio.station_name", station.replace("_", " ").title() if station else "unknown", txn, "derived")

  miles = s["environment.distance_unit"] == "mile"
  dest = s["navigation.destination"]
  if dest == "none":
    km, minutes = 0.0, 0
  else:
    km = DISTANCE_KM[dest]
    if s["navigation.waypoint"] != "none":
      km += DISTANCE_KM[s["navigation.waypoint"]]
    if s["navigation.avoid.highways"]:
      km *= 1.15
    if s["navigation.route_preference"] == "shortest":
      km *= 0.92
    minutes = int(round(km / ROUTE_SPEED[s["navigation.route_preference"]] * 60))
  world.set_raw("navigation.distance_remaining", _round1(km / KM_PER_MILE if miles else km), txn, "derived")
  world.set_raw("navigation.eta_minutes", minutes, txn, "derived")

  world.set_raw("instrument_panel.speed_unit", "mph" if miles else "km/h", txn, "derived")
  range_km = s["vehicle.fuel_level"] * 8.0 * (1.1 if s["vehicle.drive_mode"] == "eco" else 1.0)
  world.set_raw("vehicle.range_remaining", _round1(range_km / KM_PER_MILE if miles else range_km), txn, "derived")


def _convert_temperatures(world: "VehicleWorld", txn: "_Txn", leaf: Leaf, old: Any, new: Any) -> None:
  """The shared temperature unit: every temperature (settings and readings) is re-expressed in the new unit."""
  for path, other in world.schema.leaves.items():
    if other.prop.quantity == "temperature":
      world.set_raw(path, convert_temperature(world.state[path], old, new), txn, "unit conversion")


def _climate_sync(world: "VehicleWorld", txn: "_Txn", leaf: Leaf, old: Any, new: Any) -> None:
  """With sync on, every zone follows the driver's temperature."""
  s = world.state
  if not s["air_conditioner.sync"]:
    return
  if leaf.path in ("air_conditioner.temperature.driver", "air_conditioner.sync"):
    target = s["air_conditioner.temperature.driver"]
    for zone in ("passenger", "second_row", "third_row"):
      world.write(f"air_conditioner.temperature.{zone}", target, txn, "climate sync", implied=True)


def _seat_memory(world: "VehicleWorld", txn: "_Txn", leaf: Leaf, old: Any, new: Any) -> None:
  if new in SEAT_MEMORY:
    position, backrest, height = SEAT_MEMORY[new]
    world.write("seat.position.driver", position, txn, "seat memory", implied=True)
    world.write("seat.backrest_angle.driver", backrest, txn, "seat memory", implied=True)
    world.write("seat.height.driver", height, txn, "seat memory", implied=True)


# property path -> hooks run after a write to any of its leaves
HOOKS: dict[str, tuple[Callable[..., None], ...]] = {
    "environment.temperature_unit": (_convert_temperatures,),
    "air_conditioner.temperature": (_climate_sync,),
    "air_conditioner.sync": (_climate_sync,),
    "seat.memory_slot": (_seat_memory,),
}


def _seek(world: "VehicleWorld", direction: int) -> float:
  freqs = sorted(STATIONS)
  current = round(world.state["radio.frequency"], 1)
  if direction > 0:
    return next((f for f in freqs if f > current + 1e-6), freqs[0])
  return next((f for f in reversed(freqs) if f < current - 1e-6), freqs[-1])


# API name in `compute=` -> function (world, args) returning extra (path, value) writes
COMPUTE: dict[str, Callable[["VehicleWorld", dict[str, Any]], list[tuple[str, Any]]]] = {
    "radio_next_station": lambda world, args: [("radio.frequency", _seek(world, +1))],
    "radio_previous_station": lambda world, args: [("radio.frequency", _seek(world, -1))],
}
