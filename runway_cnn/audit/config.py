"""The settings of one audit; every field is a ``python -m runway_cnn.audit`` flag of that name."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from runway_cnn.data.leaks import NEAR_DUPLICATE_COSINE
from runway_cnn.errors import RunwayError
from runway_cnn.paths import absolute_path
from runway_cnn.tasks import TASKS


def _opt(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class AuditConfig:
    dataset_dir: str = _opt(None, "dataset folder (class folders, optionally under train/ "
                                  "validation/ test/), the image folder of --labels_csv, or a "
                                  "TFRecord directory", required=True)
    output_dir: str = _opt(None, "where audit.json, audit.html, the PNGs, the feature cache "
                                 "and --fix's manifest go (default: audits/<dataset folder "
                                 "name>); outside --dataset_dir", required=False)
    labels_csv: str = _opt(None, "CSV manifest: a 'filename' column and the task's label "
                                 "column(s), as for finetune")
    task: str = _opt("single_label", "single_label (every finding), multi_label or attributes "
                                     "(label errors per attribute; multi_label: duplicates, "
                                     "outliers and the shortcut check)",
                     choices=tuple(TASKS.names()))
    attributes: str = _opt(None, "attributes: the --labels_csv columns to audit, "
                                 "comma-separated (default: every column but filename)")
    group_by: str = _opt(None, "photos that belong together (folder, folder:N, column:NAME or "
                               "a regular expression, as for finetune): the shortcut check "
                               "predicts the group, label errors are cross-validated by group")
    train_dir: str = _opt(None, "a finished run's train dir: duplicates are reported within "
                                "and across ITS splits (its splits.json)")
    model_name: str = _opt(None, "the backbone of the features, as for finetune: a registry "
                                 "name, hub:URL_OR_DIR, keras:NAME[:WEIGHTS_FILE] or "
                                 "run:TRAIN_OR_EXPORT_DIR (default: efficientnet_lite0)")
    hub_handle: str = _opt(None, "the same as --model_name hub:HUB_HANDLE (its earlier form)")
    image_size: int = _opt(None, "input resolution (default: the backbone's)")
    batch_size: int = _opt(32, "images per batch of the feature pass")
    near_duplicate_cosine: float = _opt(NEAR_DUPLICATE_COSINE,
                                        "cosine similarity of frozen features at and above "
                                        "which two photos are near-duplicates")
    folds: int = _opt(5, "folds of the cross-validated regressions (out-of-fold probabilities)")
    outlier_share: float = _opt(0.01, "share of the photos, the most isolated in feature space, "
                                      "listed as outliers")
    max_shown: int = _opt(60, "findings of each kind shown in audit.html (audit.json has all)")
    fix: bool = _opt(False, "write cleaned_labels.csv: the manifest without the extra copies "
                            "and the label-error candidates the regression is sure of "
                            "(attributes: their cell made unknown); photos are never touched")
    seed: int = _opt(0, "seed of the folds")
    overwrite: bool = _opt(False, "write into --output_dir even when it holds files an audit "
                                  "did not write (they may be replaced)")

    def __post_init__(self):
        problems = [f"--{name} {getattr(self, name)!r}: {rule}" for name, ok, rule in (
            ("dataset_dir", self.dataset_dir is not None, "is required"),
            ("batch_size", self.batch_size >= 1, "must be at least 1"),
            ("near_duplicate_cosine", 0 < self.near_duplicate_cosine <= 1,
             "must be in (0, 1]"),
            ("folds", self.folds >= 2, "must be at least 2"),
            ("outlier_share", 0 <= self.outlier_share < 1, "must be in [0, 1)"),
            ("max_shown", self.max_shown >= 1, "must be at least 1"),
            ("image_size", self.image_size is None or self.image_size >= 16,
             "must be at least 16"),
        ) if not ok]
        if problems:
            raise RunwayError("; ".join(problems))
        from runway_cnn.data.folders import DATASETS, dataset_name

        absolute = lambda p: p and absolute_path(p)  # noqa: E731
        if self.dataset_dir not in DATASETS:
            self.dataset_dir = absolute(self.dataset_dir)
        self.output_dir = absolute(self.output_dir or os.path.join(
            "audits", dataset_name(self.dataset_dir)))
        self.labels_csv, self.train_dir = absolute(self.labels_csv), absolute(self.train_dir)
        if self.hub_handle and "://" not in self.hub_handle:
            self.hub_handle = absolute(self.hub_handle)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)
