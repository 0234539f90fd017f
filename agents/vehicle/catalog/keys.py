"""Key sets of keyed properties (one value per seat, door, contact, weekday, ...) and the few named lists the
catalog shares (arXiv 2509.06736, Sec. 3: a three-row cockpit with per-seat controls). Keys are identifiers
because they are path segments (`seat.heater_level.second_left`); `phrase()` turns them into words."""

SEATS = ("driver", "passenger", "second_left", "second_right", "third_left", "third_right")
FRONT_SEATS = ("driver", "passenger")
DOORS = ("driver", "passenger", "rear_left", "rear_right")
REAR_DOORS = ("rear_left", "rear_right")
AC_ZONES = ("driver", "passenger", "second_row", "third_row")
TIRES = ("front_left", "front_right", "rear_left", "rear_right")
MIRRORS = ("left", "right")
AXLES = ("front", "rear")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CONTACTS = ("alice", "bob", "carol", "david", "emma", "frank", "grace", "henry")
PLACES = ("home", "office", "airport", "train_station", "city_hospital", "central_mall", "grand_theater",
          "riverside_park", "north_gas_station", "lakeside_hotel", "university", "stadium")
DEVICES = ("alice_phone", "bob_phone", "family_tablet", "work_laptop")
PLAYLISTS = ("road_trip", "chill", "workout", "classical", "jazz")
VIDEOS = ("ocean_documentary", "space_odyssey", "cartoon_hour", "cooking_show", "nature_walk", "comedy_special",
          "history_channel", "concert_live")
APPS = ("messages", "email", "calendar", "news", "social", "weather")
EQ_BANDS = ("bass", "low_mid", "mid", "high_mid", "treble")
AMBIENT_ZONES = ("dashboard", "center_console", "front_doors", "rear_doors", "footwell", "roof")
COLORS = ("white", "warm_white", "red", "orange", "yellow", "green", "blue", "purple", "pink")
SHADES = ("roof_front", "roof_rear", "rear_left_door", "rear_right_door", "rear_window")
HEADPHONES = ("second_left", "second_right", "third_left", "third_right")

_WORDS = {"driver": "driver's", "passenger": "passenger's", "second_left": "second-row left",
          "second_right": "second-row right", "third_left": "third-row left", "third_right": "third-row right",
          "second_row": "second-row", "third_row": "third-row", "rear_left": "rear left", "rear_right": "rear right",
          "all": "all", "alice_phone": "Alice's phone", "bob_phone": "Bob's phone"}


def phrase(key: str) -> str:
  """A key as words, for the user's requests: "second_left" -> "second-row left"."""
  if key in CONTACTS:
    return key.title()
  return _WORDS.get(key, key.replace("_", " "))
