"""``python -m runway_cnn.checkpoints``: see :mod:`runway_cnn.cli.checkpoints`."""
from runway_cnn import cli

if __name__ == "__main__":
    cli.run_module("runway_cnn.cli.checkpoints")
