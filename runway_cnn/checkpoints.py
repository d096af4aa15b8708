"""``python -m runway_cnn.checkpoints``: see :mod:`runway_cnn.cli.checkpoints`."""
from runway_cnn import cli
from runway_cnn.cli.checkpoints import main

if __name__ == "__main__":
    cli.run(main)
