"""``python -m runway_cnn.report``: see :mod:`runway_cnn.cli.report`."""
from runway_cnn import cli

if __name__ == "__main__":
    cli.run_module("runway_cnn.cli.report")
