"""``python -m runway_cnn.audit``: see :mod:`runway_cnn.cli.audit`."""
from runway_cnn import cli

if __name__ == "__main__":
    cli.run_module("runway_cnn.cli.audit")
