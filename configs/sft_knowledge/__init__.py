"""Configs of the SFT-and-knowledge study (arXiv 2509.16596): `common.base()` is the full schema; `full.py` is the
paper-like grid, `quick.py` the minutes-long slice used by the main job."""
