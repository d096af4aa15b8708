"""``python -m runway_cnn.evaluate``: see :mod:`runway_cnn.cli.evaluate`."""
from runway_cnn import cli
from runway_cnn.cli.evaluate import main

if __name__ == "__main__":
    cli.run(main)
