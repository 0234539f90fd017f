"""Experiment configs: `configs/<package>/<experiment>.py`, each defining `get_config()`."""
