"""``python -m runway_cnn.datasets convert``: see :mod:`runway_cnn.cli.datasets`."""
from runway_cnn import cli

if __name__ == "__main__":
    cli.run_module("runway_cnn.cli.datasets")
