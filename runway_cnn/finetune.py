"""``python -m runway_cnn.finetune``: see :mod:`runway_cnn.cli.finetune`."""
from runway_cnn import cli

if __name__ == "__main__":
    cli.run_module("runway_cnn.cli.finetune")
