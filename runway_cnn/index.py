"""``python -m runway_cnn.index``: see :mod:`runway_cnn.cli.index`."""
from runway_cnn import cli

if __name__ == "__main__":
    cli.run_module("runway_cnn.cli.index")
