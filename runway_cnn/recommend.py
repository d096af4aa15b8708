"""``python -m runway_cnn.recommend``: see :mod:`runway_cnn.cli.recommend`."""
from runway_cnn import cli
from runway_cnn.cli.recommend import main

if __name__ == "__main__":
    cli.run(main)
