"""``python -m runway_cnn.predict``: see :mod:`runway_cnn.cli.predict`."""
from runway_cnn import cli
from runway_cnn.cli.predict import main

if __name__ == "__main__":
    cli.run(main)
