"""The settings of one audit; every field is a ``python -m runway_cnn.audit`` flag of that name,
and a task's options (``--attributes``, ``--target_column`` …) are given beside them, as for
finetune. The settings an audit shares with a run are
:class:`~runway_cnn.training.config.FinetuneConfig`'s fields (their defaults and flags; their
help where the audit means the same) and are checked there: :meth:`AuditConfig.run_config`."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from runway_cnn.data.leaks import NEAR_DUPLICATE_COSINE
from runway_cnn.errors import RunwayError
from runway_cnn.paths import absolute_path
from runway_cnn.tasks.base import option, type_problems
from runway_cnn.training.config import FinetuneConfig

# the settings of a run the audit reads the data and builds the backbone with
SHARED = ("dataset_dir", "labels_csv", "task", "group_by", "model_name", "hub_handle",
          "image_size", "batch_size", "seed", "overwrite")


def _shared(name: str, help: str | None = None):
    """FinetuneConfig's field ``name`` (its default, flag and checks), with the audit's
    ``help`` where the audit means something else by it."""
    run = {f.name: f for f in FinetuneConfig.fields()}[name]
    return option(run.default, help or run.metadata["help"],
                  **{k: v for k, v in run.metadata.items() if k != "help"})


@dataclass(init=False)
class AuditConfig:
    dataset_dir: str = _shared("dataset_dir", "dataset folder (class folders, optionally under "
                                              "train/ validation/ test/), the image folder of "
                                              "--labels_csv, or a TFRecord directory")
    output_dir: str = option(None, "where audit.json, audit.html, the PNGs, the feature cache "
                                   "and --fix's manifest go (default: audits/<dataset folder "
                                   "name>); outside --dataset_dir", required=False)
    labels_csv: str = _shared("labels_csv")
    task: str = _shared("task", "what the labels are, read as finetune reads them: "
                                "single_label (every finding), attributes (label errors per "
                                "attribute), multi_label or regression (duplicates, outliers and "
                                "the shortcut check); each task's own flags are listed under "
                                "its name")
    group_by: str = _shared("group_by", "photos that belong together (folder, folder:N, "
                                        "column:NAME or a regular expression, as for finetune): "
                                        "the shortcut check predicts the group, label errors are "
                                        "cross-validated by group")
    train_dir: str = option(None, "a finished run's train dir: duplicates are reported within "
                                  "and across ITS splits (its splits.json)")
    model_name: str = _shared("model_name", "the backbone of the features, as for finetune: a "
                                            "registry name, hub:URL_OR_DIR, "
                                            "keras:NAME[:WEIGHTS_FILE] or run:TRAIN_OR_EXPORT_DIR "
                                            "(default: efficientnet_lite0)")
    hub_handle: str = _shared("hub_handle")
    image_size: int = _shared("image_size")
    batch_size: int = _shared("batch_size", "images per batch of the feature pass")
    near_duplicate_cosine: float = option(NEAR_DUPLICATE_COSINE,
                                          "cosine similarity of frozen features at and above "
                                          "which two photos are near-duplicates")
    folds: int = option(5, "folds of the cross-validated regressions (out-of-fold probabilities)")
    outlier_share: float = option(0.01, "share of the photos, the most isolated in feature space, "
                                        "listed as outliers")
    max_shown: int = option(60, "findings of each kind shown in audit.html (audit.json has all)")
    fix: bool = option(False, "write cleaned_labels.csv: the manifest without the extra copies "
                              "and the label-error candidates the regression is sure of "
                              "(attributes: their cell made unknown), in the columns the task "
                              "reads; photos are never touched")
    seed: int = _shared("seed", "seed of the folds")
    overwrite: bool = _shared("overwrite", "write into --output_dir even when it holds files an "
                                           "audit did not write (they may be replaced)")
    task_options: dict = field(default_factory=dict, metadata={
        "help": "the task's own options (its flags: --attributes, --target_column …)",
        "flag": False})

    __init__ = FinetuneConfig.__init__  # the fields by name, the task's options beside them

    def __post_init__(self):
        own = [f for f in self.fields() if f.name not in SHARED and f.name != "task_options"]
        problems = [f"--{name} {value!r}: {rule}" for name, value, rule in
                    type_problems(self, own)] or [
            f"--{name} {getattr(self, name)!r}: {rule}" for name, ok, rule in (
                ("near_duplicate_cosine", 0 < self.near_duplicate_cosine <= 1,
                 "must be in (0, 1]"),
                ("folds", self.folds >= 2, "must be at least 2"),
                ("outlier_share", 0 <= self.outlier_share < 1, "must be in [0, 1)"),
                ("max_shown", self.max_shown >= 1, "must be at least 1"),
            ) if not ok]
        try:
            run = self.run_config()  # the shared settings and the task's options: checked there
        except RunwayError as error:
            if not problems:
                raise
            raise RunwayError("; ".join([str(error), *problems])) from None
        if problems:
            raise RunwayError("; ".join(problems))
        from runway_cnn.data.folders import dataset_name

        self.dataset_dir, self.labels_csv = run.dataset_dir, run.labels_csv
        self.task_options = run.task_options
        absolute = lambda p: p and absolute_path(p)  # noqa: E731
        self.output_dir = absolute(self.output_dir or os.path.join(
            "audits", dataset_name(self.dataset_dir)))
        self.train_dir = absolute(self.train_dir)
        if self.hub_handle and "://" not in self.hub_handle:
            self.hub_handle = absolute(self.hub_handle)

    def run_config(self) -> FinetuneConfig:
        """The settings of a run over this dataset (the shared ones, the task's options),
        writing into ``output_dir``: the audit reads the data and builds the backbone as that
        run would. Raises the one-line error of a setting a run could not use."""
        return FinetuneConfig(**{name: getattr(self, name) for name in SHARED},
                              task_options=self.task_options, train_dir=self.output_dir,
                              verbose=0)

    to_dict = FinetuneConfig.to_dict  # every setting by its flag's name, the options beside

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)
