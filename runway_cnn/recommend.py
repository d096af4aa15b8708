"""``python -m runway_cnn.recommend``: see :mod:`runway_cnn.cli.recommend`."""
from runway_cnn import cli

if __name__ == "__main__":
    cli.run_module("runway_cnn.cli.recommend")
