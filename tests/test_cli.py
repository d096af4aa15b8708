"""The ``runway-cnn`` console script: every ``python -m runway_cnn.X`` command as a subcommand."""
from __future__ import annotations

import shutil
import subprocess
from importlib import metadata

import pytest

from runway_cnn.cli import main as runway_cnn


def _installed() -> bool:
    """Whether pip installed the package: its console script reads the package's metadata."""
    try:
        metadata.distribution("runway_cnn")
    except metadata.PackageNotFoundError:
        return False
    return True


def test_help_lists_every_command(capsys):
    runway_cnn.main(["--help"])
    out = capsys.readouterr().out
    for command in ("finetune", "export", "predict", "evaluate", "serving", "report",
                    "checkpoints"):
        assert f"  {command} " in out


def test_a_subcommand_runs_its_commands_main(capsys):
    with pytest.raises(SystemExit) as stop:
        runway_cnn.main(["predict", "--help"])
    assert stop.value.code == 0
    assert "usage: python -m runway_cnn.predict" in capsys.readouterr().out


def test_an_unknown_command_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as stop:
        runway_cnn.main(["fine-tune"])
    assert stop.value.code == 2
    assert "unknown command 'fine-tune'" in capsys.readouterr().err


@pytest.mark.skipif(not _installed(), reason="runway_cnn is not installed (no package metadata "
                    "for its console script): pip install -e .")
def test_the_installed_script_runs():
    """``pip install -e .`` (the README's commands) puts ``runway-cnn`` on the PATH."""
    script = shutil.which("runway-cnn")
    assert script, "runway-cnn is not installed: pip install -e ."
    out = subprocess.run([script, "report", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "TRAIN_DIR" in out.stdout, out.stderr
