"""``python -m runway_cnn.predict``: see :mod:`runway_cnn.cli.predict`."""
from runway_cnn import cli

if __name__ == "__main__":
    cli.run_module("runway_cnn.cli.predict")
