"""The one interface between a prediction problem's labels and the rest of the package.

A :class:`Task` owns its label space (read from the data), the per-image targets, head, loss,
Keras metrics and monitored figure, the stage-1 convex solver (or none), the graph outputs of the
exported signatures, the decoding of those outputs into result dicts (what ``Predictor``,
``Client`` and ``predict``'s CSV show), its evaluation figures and files, its export assets, its
splitting rule, and a config that round-trips. Nothing outside ``tasks/`` branches on a task's
kind: it calls these methods.

Targets are one numpy array per split, one row per image: a class id (single-label), a multi-hot
vector (multi-label), attribute value ids with -1 for unknown (attributes).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.errors import control_character


def option(default, help: str, **extra) -> Any:
    """A task option: a dataclass field whose ``help`` (and ``choices``) make its ``finetune``
    flag."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TaskOptions:
    """A task's own settings, each a ``finetune`` flag of the same name (``--head``,
    ``--attributes`` …); what every task shares (dropout, pooling, the splits) is in
    :class:`~runway_cnn.training.config.FinetuneConfig`. A task without options keeps this empty
    class."""

    def __post_init__(self):
        for f in self.fields():
            value, choices = getattr(self, f.name), f.metadata.get("choices")
            if choices and value not in choices:
                raise ValueError(f"--{f.name} {value!r}: use one of {', '.join(choices)}")

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Task:
    """What training, export and inference need to know about a prediction problem.

    ``labels`` is the label space in target order (classes, tags, or ``attribute=value``
    names); ``monitor`` / ``monitor_mode`` name the Keras validation figure that picks the best
    weights; ``summary_figures`` are the test figures an experiment summarises (mean ± std), the
    first being the headline.
    """

    name = "task"
    monitor = "val_loss"
    monitor_mode = "min"
    summary_figures: tuple[str, ...] = ("loss",)
    plotted_figures: tuple[str, ...] = ()  # summary figures in [0, 1], drawn side by side
    stratum = "class"  # what a split keeps in proportion, in messages ("share their class")
    csv_columns: tuple[str, ...] = ()  # the --labels_csv columns raw_label needs besides filename
    options_class: type[TaskOptions] = TaskOptions  # the task's flags
    # the module of the task's figures, files and text (its ``headline(figures)`` and
    # ``format_figures(figures)`` are the task's), or None
    evaluation: ModuleType | None = None

    def __init__(self, labels: Sequence[str], **options):
        self.labels = list(labels)
        self.options = dict(options)

    @property
    def monitored_figure(self) -> str:
        """The evaluation figure :attr:`monitor` watches on validation (``val_top1`` →
        ``top1``): a run's headline on any split."""
        return self.monitor.removeprefix("val_")

    # -- labels and targets ------------------------------------------------------------------
    @classmethod
    def raw_label(cls, row: dict) -> Any:
        """An image's raw label from its ``--labels_csv`` row (``ValueError`` for a cell that
        cannot be read)."""
        raise NotImplementedError

    @staticmethod
    def label_text(text: str, what: str = "label") -> str:
        """``text`` if it can be a label; ``ValueError`` naming its control character (a line
        break inside a label would shift every later line of ``labels.txt``)."""
        char = control_character(text)
        if char is not None:
            raise ValueError(f"{what} {text!r} contains the control character {char}")
        return text

    @classmethod
    def csv_reader(cls, **options) -> tuple[Callable[[dict], Any], tuple[str, ...]]:
        """How a ``--labels_csv`` row becomes a raw label under the task's ``options``: the
        function and the columns it needs (by default :meth:`raw_label` and
        :attr:`csv_columns`)."""
        return cls.raw_label, cls.csv_columns

    @classmethod
    def labels_csv_needed(cls, **options) -> str | None:
        """Why class folder names cannot be this task's labels under ``options`` (then a run
        and an evaluation need ``--labels_csv``), or None where they can."""
        return None

    @classmethod
    def label_space(cls, raw_labels: Sequence[Any], **options) -> list[str]:
        """The labels of a dataset, in target order, from every image's raw label (a class
        name; a tuple of tags; a dict of attribute values) and the task's ``options`` (the
        fields of :attr:`options_class`; a task uses those it needs)."""
        raise NotImplementedError

    def targets(self, raw_labels: Sequence[Any], where: str) -> np.ndarray:
        """Raw labels → targets; a label outside the label space is a
        :class:`~runway_cnn.errors.DataError` naming ``where`` (a folder, a CSV file)."""
        raise NotImplementedError

    def check_learnable(self, targets: np.ndarray, where: str) -> None:
        """Raises a :class:`~runway_cnn.errors.DataError` naming ``where`` when every usable
        image's ``targets`` (before the split) leave nothing to learn (a regression's one
        value); most tasks check their label space elsewhere."""

    def unknown_labels(self, raw_labels: Sequence[Any]) -> dict[str, int]:
        """Label values outside the label space, with how often they occur (data report)."""
        raise NotImplementedError

    def unknown_summary(self, raw_labels: Sequence[Any]) -> dict:
        """What evaluation says of labels outside the label space: ``unknown_labels`` (label →
        occurrences) and ``unknown_label_count`` (their sum)."""
        unknown = self.unknown_labels(raw_labels)
        return {"unknown_labels": unknown, "unknown_label_count": sum(unknown.values())}

    def label_counts(self, targets: np.ndarray) -> dict[str, int]:
        """How many images of ``targets`` carry each label (for the data report)."""
        raise NotImplementedError

    def split(self, targets: np.ndarray, validation_fraction: float, test_fraction: float,
              seed: int, groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Split name → sorted indices of a random split this task's way (stratified); no
        ``"test"`` when ``test_fraction`` is 0; with ``groups`` (a key per image) no group is in
        two splits. ``ValueError`` when too few images (or groups) to split."""
        raise NotImplementedError

    def kfold(self, targets: np.ndarray, k: int, seed: int, validation_fraction: float,
              groups: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
        """K folds, fold i testing on the i-th; validation carved from the rest; with
        ``groups``, no group in two parts of a fold."""
        raise NotImplementedError

    # -- model -------------------------------------------------------------------------------
    def prepare(self, train_targets: np.ndarray) -> None:
        """Learns what the head needs from the training targets before it is built (ML-GCN's
        label graph); most tasks need nothing."""

    def build_head(self, feature_dim: int) -> keras.Model:
        """Pooled backbone features ``[b, feature_dim]`` → logits."""
        raise NotImplementedError

    def loss(self) -> keras.losses.Loss:
        raise NotImplementedError

    def metrics(self) -> list:
        raise NotImplementedError

    def sample_weights(self, targets: np.ndarray) -> np.ndarray | None:
        """Per-image training weights (oversampling of rare values, as weights), or None."""
        return None

    def fit_head_convex(self, head: keras.Model, features: np.ndarray, targets: np.ndarray,
                        val_features: np.ndarray, val_targets: np.ndarray) -> dict | None:
        """Solves the head on fixed features as a convex problem, regularisation chosen on
        validation, writing the solution into ``head``; returns what was tried and chosen, or
        None where the task has no such solver (the trainer then trains the head with Keras)."""
        return None

    def refit_head_convex(self, head: keras.Model, features: np.ndarray, targets: np.ndarray,
                          solved: dict) -> dict | None:
        """Solves the head again on ``features`` (more images than stage 1's training split)
        with the regularisation ``solved`` (what :meth:`fit_head_convex` returned) chose,
        writing the solution into ``head``; returns what was fitted, or None where the task has
        no convex solver (the trainer then trains the head with Keras for stage 1's best number
        of epochs)."""
        return None

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Logits → the scores evaluation works on."""
        raise NotImplementedError

    def calibrate(self, targets: np.ndarray, scores: np.ndarray) -> dict | None:
        """Fits the task's decision rule on validation targets and scores after training (per-
        label thresholds), kept in :meth:`config`; returns what it chose, or None."""
        return None

    # -- export and inference ----------------------------------------------------------------
    def predict_outputs(self, logits: tf.Tensor, top_k: int) -> dict[str, tf.Tensor]:
        """Graph-side outputs of the exported signatures, one row per image."""
        raise NotImplementedError

    def explained(self, logits: tf.Tensor) -> tf.Tensor:
        """Graph-side: the logit indices ``[b, m]`` whose Grad-CAM maps the ``explain``
        signatures return for each image, ``-1`` where an image has fewer than ``m``: the
        labels :meth:`decode` answers with (by default the top-1)."""
        return tf.argmax(logits, axis=-1, output_type=tf.int32)[:, None]

    def decode(self, outputs: dict[str, np.ndarray], error: str) -> list[dict]:
        """Signature outputs (one row per image; ``valid`` marks undecodable rows) → one
        result dict per image; an invalid row's dict carries ``error``."""
        raise NotImplementedError

    def empty_result(self) -> dict:
        """The result of an image that could not be read (its ``error`` is added beside)."""
        raise NotImplementedError

    def top(self, result: dict, k: int) -> dict:
        """``result`` cut to the ``k`` best answers where the task ranks them (``predict``'s
        ``--top_k``)."""
        return result

    def label_groups(self) -> dict[str, list[int]]:
        """Named groups of score columns a similarity query may restrict itself to (attributes:
        one group per attribute); by default one group of them all."""
        return {"all": list(range(len(self.labels)))}

    def describe(self, result: dict, limit: int = 3, groups: Sequence[str] | None = None) -> str:
        """A result in a few words, for captions: its first ``limit`` labels (of ``groups``
        only, where the task has groups)."""
        return ", ".join(result.get("labels", [])[:limit])

    def csv_header(self, top_k: int) -> list[str]:
        """The columns ``predict`` writes for a result (besides path and error)."""
        raise NotImplementedError

    def csv_cells(self, result: dict, top_k: int) -> list[str]:
        raise NotImplementedError

    def assets(self) -> dict[str, str]:
        """Files the export carries in ``assets/`` besides its metadata (vocabulary, …)."""
        return {"labels.txt": "\n".join(self.labels) + "\n"}

    # -- evaluation --------------------------------------------------------------------------
    def agreement(self, reference: np.ndarray, scores: np.ndarray) -> float:
        """Share of images whose decision from ``scores`` equals that from ``reference`` (how
        far a TFLite file follows its SavedModel)."""
        raise NotImplementedError

    def evaluate(self, targets: np.ndarray, scores: np.ndarray) -> dict:
        """Figures for ``metrics.json`` and ``eval.json`` (plain JSON types)."""
        raise NotImplementedError

    def predictions(self, sources: Sequence[str], targets: np.ndarray,
                    scores: np.ndarray) -> list[dict]:
        """One row per image for ``predictions.csv``: source, truth, prediction."""
        raise NotImplementedError

    def confident_errors(self, targets: np.ndarray, scores: np.ndarray,
                         n: int) -> dict[str, list[tuple[int, int, str]]]:
        """The ``n`` most confident errors per class (group name → ``(image, label index,
        caption)``, most confident first), the label index being a label :meth:`explained`
        gives for that image (what ``evaluate --explain`` draws the Grad-CAM map of)."""
        raise NotImplementedError

    def write_evaluation(self, figures: dict, output_dir: Path, title: str) -> None:
        """The task's evaluation files (CSVs, PNGs) beside ``eval.json``."""

    def headline(self, figures: dict) -> str:
        """The figures in one line, for the terminal (the :attr:`evaluation` module's
        ``headline`` where the task has one)."""
        if self.evaluation is not None:
            return self.evaluation.headline(figures)
        return "  ".join(f"{k} {figures[k]:.3f}" for k in self.summary_figures if k in figures)

    def format_figures(self, figures: dict) -> list[str]:
        """The figures as text lines beyond the headline (per-label tables …; the
        :attr:`evaluation` module's ``format_figures`` where the task has one)."""
        return [] if self.evaluation is None else self.evaluation.format_figures(figures)

    def combine(self, figures: Sequence[dict], output_dir: Path, title: str) -> dict:
        """What an experiment adds up over its runs' test figures (written into ``output_dir``
        as files too); ``{}`` when nothing is summed."""
        return {}

    # -- persistence -------------------------------------------------------------------------
    def config(self) -> dict:
        """Everything :func:`runway_cnn.tasks.task_from_config` needs to rebuild this task."""
        return {"task": self.name, "labels": list(self.labels), **self.options}

    # -- audit -------------------------------------------------------------------------------
    def audit_questions(self, targets: np.ndarray
                        ) -> list[tuple[str | None, np.ndarray, list[str]]]:
        """The label questions the audit finds label errors and confused pairs on: (attribute
        name or None, an integer column of ``targets`` with -1 for unknown, its value names).
        No questions by default (the audit then says it did not look for them)."""
        return []

    def shortcut_columns(self, targets: np.ndarray) -> list[np.ndarray]:
        """The integer label columns (-1 unknown) the audit's shortcut check predicts beside
        the group: by default those of :meth:`audit_questions`."""
        return [column for _, column, _ in self.audit_questions(targets)]

    def raw_text(self, raw: Any) -> str:
        """An image's raw label as one text (the audit's listings; equal texts are the same
        label)."""
        return str(raw)

    def raw_classes(self, raw: Any,
                    blanked: set[str] | frozenset[str] = frozenset()) -> set[str]:
        """The classes an image with raw label ``raw`` is a photo of (those of the attributes in
        ``blanked`` left out): a cleaned manifest keeps a photo of each."""
        return {self.raw_text(raw)}

    def manifest_columns(self) -> list[str]:
        """The ``--labels_csv`` columns besides ``filename`` that give this task back its raw
        labels: by default those :meth:`csv_reader` reads under the task's options."""
        return list(self.csv_reader(**self.options)[1])

    def manifest_cells(self, raw: Any,
                       blanked: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
        """An image's cells of :meth:`manifest_columns` from its raw label (those of the
        attributes in ``blanked`` left empty: unknown); by default one column, the
        :meth:`raw_text`."""
        return dict.fromkeys(self.manifest_columns(), self.raw_text(raw))
