"""``python -m runway_cnn.serving``: see :mod:`runway_cnn.cli.serving`."""
from runway_cnn import cli
from runway_cnn.cli.serving import main

if __name__ == "__main__":
    cli.run(main)
