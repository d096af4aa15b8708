"""``python -m runway_cnn.export``: see :mod:`runway_cnn.cli.export`."""
from runway_cnn import cli

cli.run_module("runway_cnn.cli.export")
