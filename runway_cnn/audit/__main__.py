"""``python -m runway_cnn.audit``: see :mod:`runway_cnn.cli.audit`."""
from runway_cnn import cli
from runway_cnn.cli.audit import main

if __name__ == "__main__":
    cli.run(main)
