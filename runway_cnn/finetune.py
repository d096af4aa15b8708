"""``python -m runway_cnn.finetune``: see :mod:`runway_cnn.cli.finetune`."""
from runway_cnn import cli
from runway_cnn.cli.finetune import main

if __name__ == "__main__":
    cli.run(main)
