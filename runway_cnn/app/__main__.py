"""``python -m runway_cnn.app``: see :mod:`runway_cnn.cli.app`."""
from runway_cnn import cli

if __name__ == "__main__":
    cli.run_module("runway_cnn.cli.app")
