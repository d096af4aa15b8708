"""``python -m runway_cnn.index``: see :mod:`runway_cnn.cli.index`."""
from runway_cnn import cli
from runway_cnn.cli.index import main

if __name__ == "__main__":
    cli.run(main)
