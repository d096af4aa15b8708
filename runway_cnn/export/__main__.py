"""``python -m runway_cnn.export``: see :mod:`runway_cnn.cli.export`."""
from runway_cnn import cli
from runway_cnn.cli.export import main

cli.run(main)
