"""Test-wide settings: quiet, deterministic, and absl flags parsed (grain's multi-worker loader reads them)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import absl.flags  # noqa: E402

absl.flags.FLAGS.mark_as_parsed()
