"""``python -m runway_cnn.serving``: see :mod:`runway_cnn.cli.serving`."""
from runway_cnn import cli

if __name__ == "__main__":
    cli.run_module("runway_cnn.cli.serving")
