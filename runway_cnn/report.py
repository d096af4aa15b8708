"""``python -m runway_cnn.report``: see :mod:`runway_cnn.cli.report`."""
from runway_cnn import cli
from runway_cnn.cli.report import main

if __name__ == "__main__":
    cli.run(main)
