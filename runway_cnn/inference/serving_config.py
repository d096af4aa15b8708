"""TF Serving's ``--model_config_file``: one entry per model under an export base."""
from __future__ import annotations

import json
import os
from pathlib import Path

from runway_cnn.errors import RunwayError
from runway_cnn.export_dir import version_dirs
from runway_cnn.output_checks import check_output_file, record_written


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # " and \\ escaped: valid protobuf text format


def model_dirs(export_dir: str | Path) -> list[Path]:
    """The model dirs (``<export_dir>/<name>`` holding numbered versions) under an export base."""
    base = Path(export_dir)
    if not base.is_dir():
        raise RunwayError(f"--export_dir {base} is not a directory")
    models = sorted(p for p in base.iterdir() if p.is_dir() and version_dirs(p))
    if not models:
        raise RunwayError(f"--export_dir {base} holds no exported model "
                          "(<name>/<version>/saved_model.pb)")
    return models


def models_config(export_dir: str | Path, base_path: str | None = None) -> str:
    """TF Serving's ``--model_config_file`` text (a ``ModelServerConfig``) serving every model
    under ``export_dir``; ``base_path`` replaces the export dir in the paths (e.g. ``/models``,
    where a docker container mounts it)."""
    lines = ["model_config_list {"]
    for model in model_dirs(export_dir):
        path = f"{base_path.rstrip('/')}/{model.name}" if base_path else str(model.resolve())
        lines += ["  config {", f"    name: {_quote(model.name)}",
                  f"    base_path: {_quote(path)}", '    model_platform: "tensorflow"', "  }"]
    return "\n".join(lines + ["}"]) + "\n"


def write_models_config(export_dir: str | Path, output: str | Path | None = None,
                        base_path: str | None = None, overwrite: bool = False) -> Path:
    """Writes :func:`models_config`'s text to ``output`` (default: ``models.config`` in the
    export base): a new file, or one this package wrote, unless ``overwrite``."""
    output = Path(output) if output else Path(export_dir) / "models.config"
    check_output_file(output, "--output", overwrite=overwrite)
    text = models_config(export_dir, base_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".tmp-{output.name}")
    tmp.write_text(text)
    os.replace(tmp, output)
    record_written(output)
    return output
