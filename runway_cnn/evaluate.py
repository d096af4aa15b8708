"""``python -m runway_cnn.evaluate``: see :mod:`runway_cnn.cli.evaluate`."""
from runway_cnn import cli

if __name__ == "__main__":
    cli.run_module("runway_cnn.cli.evaluate")
