"""``python -m runway_cnn.app``: see :mod:`runway_cnn.cli.app`."""
from runway_cnn import cli
from runway_cnn.cli.app import main

if __name__ == "__main__":
    cli.run(main)
