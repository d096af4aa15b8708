"""``python -m runway_cnn.datasets convert``: see :mod:`runway_cnn.cli.datasets`."""
from runway_cnn import cli
from runway_cnn.cli.datasets import main

if __name__ == "__main__":
    cli.run(main)
