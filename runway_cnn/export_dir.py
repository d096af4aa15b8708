"""The files of an export, named in one place, and how a path the user gives (a version dir, a
serving-name dir, an export base, a train dir) is resolved to one version dir. Nothing here
imports TensorFlow."""
from __future__ import annotations

import json
import os
from pathlib import Path

from runway_cnn.errors import CheckpointError
from runway_cnn.json_io import read_json
from runway_cnn.train_dir import TrainDir

# <export base>/<serving name>/<version>/{saved_model.pb, variables/, assets/, assets.extra/}

IMAGE_BYTES = "image_bytes"  # the input of every signature that takes encoded images
META_FILE = "runway_cnn.json"  # in assets/: backbone, task config, preprocessing, signatures
LABELS_FILE = "labels.txt"  # in assets/: one label a line
LEARNED_FILE = "learned_from.txt"  # in assets/: content keys of the photos it learned from


def is_export(path: Path) -> bool:
    """Whether ``path`` is a folder this package exported: a SavedModel with its assets."""
    return (path / "saved_model.pb").is_file() and (path / "assets" / META_FILE).is_file()


def version_dirs(model_dir: Path) -> list[Path]:
    """The versions of a serving-name dir, oldest first: the folders named by a number that
    hold a SavedModel (what TF Serving serves); a class folder ``1/`` of photos is none."""
    return [p for p in numbered_dirs(model_dir) if (p / "saved_model.pb").is_file()]


def numbered_dirs(model_dir: Path) -> list[Path]:
    """Every folder of ``model_dir`` named by a number, in number order."""
    if not model_dir.is_dir():
        return []
    return sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))


def next_version(model_dir: Path) -> int:
    """The number after every numbered folder's, exports or not (none is written over)."""
    numbered = numbered_dirs(model_dir)
    return int(numbered[-1].name) + 1 if numbered else 1


def is_model_name(name: str) -> bool:
    """Whether ``name`` can name a model under an export base: one plain folder name."""
    return bool(name) and name == os.path.basename(name) and not name.startswith(".") \
        and "\\" not in name and "\0" not in name


def resolve_export(path: str | Path) -> Path:
    """A version dir as is; a serving-name dir → its newest version; an export base with one
    model, or a train dir (via its metrics.json or ``export/``) → that model's newest version."""
    path = Path(os.path.abspath(path))
    if (path / "saved_model.pb").exists():
        return path
    if not path.exists():
        raise CheckpointError(f"model path {path} does not exist")
    metrics = TrainDir(path).metrics
    if metrics.exists():
        recorded = read_json(metrics, fix="name the export version dir instead, or run the "
                                          "finetune command again to rewrite it").get("export_path")
        if recorded and (Path(recorded) / "saved_model.pb").exists():
            return Path(recorded)
    versions = version_dirs(path)
    if versions:
        return versions[-1]
    for base in (path, TrainDir(path).export_base):
        models = [p for p in base.iterdir() if version_dirs(p)] if base.is_dir() else []
        if len(models) == 1:
            return version_dirs(models[0])[-1]
        if len(models) > 1:
            names = ", ".join(p.name for p in models)
            raise CheckpointError(f"{base} holds several models ({names}); name one")
    raise CheckpointError(f"no SavedModel export found under {path}")


def read_assets(version_dir: Path) -> tuple[list[str], dict]:
    """An export's labels and ``runway_cnn.json`` metadata."""
    assets = version_dir / "assets"
    try:
        labels = (assets / LABELS_FILE).read_text().splitlines()
        meta = json.loads((assets / META_FILE).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{version_dir} is not a runway_cnn export (cannot read "
                              f"assets/{LABELS_FILE} and assets/{META_FILE}: {error})") from error
    return labels, meta


def read_learned_keys(version_dir: Path) -> set[str] | None:
    """The content keys of the photos an export learned from (``assets/learned_from.txt``);
    None for an export that records none (made before they were recorded)."""
    path = version_dir / "assets" / LEARNED_FILE
    try:
        return set(path.read_text().split())
    except FileNotFoundError:
        return None
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error}") from error
