"""The one interface between a prediction problem's labels and the rest of the package.

A :class:`Task` is three small contracts, each with defaults wherever a task can do without:

- :class:`TaskLabels` — labels and splits: how a CSV row becomes a raw label, the label space,
  the per-image targets, the splitting rule, what the data report and the audit count;
- :class:`TaskModel` — head and stage-1 solver: the head, loss, Keras metrics, the optional
  convex solver of stage 1 and its refit;
- :class:`TaskOutputs` — outputs, decoding and evaluation: the exported signatures' outputs,
  their decoding into result dicts (what ``Predictor``, ``Client``, ``predict``'s CSV and the web
  page show), the figures and files of an evaluation.

A minimal task implements ``raw_label``, ``label_space``, ``targets``, ``loss``,
``probabilities``, ``predict_outputs``, ``decode`` and ``evaluate`` (see
``docs/adding_a_task.md``). Nothing outside ``tasks/`` branches on a task's kind: it calls these
methods.

Targets are one numpy array per split, one row per image: a class id (single-label), a multi-hot
vector (multi-label), attribute value ids with -1 for unknown (attributes).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.data.splits import kfold_splits, stratified_split
from runway_cnn.errors import DataError, RunwayError, control_character
from runway_cnn.tasks.heads import classification_head


def option(default, help: str, **extra) -> Any:
    """A setting: a dataclass field whose ``help`` (and ``choices``, ``required`` …) make its
    flag (a task's options, ``FinetuneConfig``, ``AuditConfig``)."""
    return field(default=default, metadata={"help": help, **extra})


_PATH = ((str, os.PathLike), None, "a path")
_TYPES = {"int": ((numbers.Integral,), int, "a whole number"),
          "float": ((numbers.Real,), float, "a number"),
          "str": ((str, os.PathLike), os.fspath, "a string"),
          "bool": ((bool,), bool, "True or False"),
          "Path": _PATH, "os.PathLike": _PATH}


def type_problems(c, fields) -> list[tuple[str, object, str]]:
    """Each setting of ``c`` (a config, or a namespace of its fields, or of a function's
    arguments) of its field's annotated type (``int``, ``float``, ``str``, ``bool``, paths, or
    a union of them), or None where that is the default or the annotation allows it, and one of
    the field's choices; values converted to the plain type (numpy numbers, paths; a whole
    number as the text of a string field marked ``number``: ``unfreeze=20``). Returns (name,
    value, what is expected) of each that is not: a string of a number is not a number. A field
    of another type (a dict, a Predictor, a list) is left to its owner."""
    problems = []
    for f in fields:
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        kinds = [kind.strip() for kind in annotation.split("|")]
        optional = "None" in kinds
        kinds = [kind for kind in kinds if kind != "None"]
        value = getattr(c, f.name)
        if not kinds or any(kind not in _TYPES for kind in kinds) or value is None and (
                f.default is None or optional):
            continue
        types = tuple(t for kind in kinds for t in _TYPES[kind][0])
        plain = _TYPES[kinds[0]][1] if len(kinds) == 1 else None
        expected = " or ".join(_TYPES[kind][2] for kind in kinds)
        if f.metadata.get("number"):
            types, plain = (*types, numbers.Integral), str
            expected += " or a whole number"
        choices = f.metadata.get("choices")
        if not isinstance(value, types) or isinstance(value, bool) and "bool" not in kinds:
            none = (optional or f.default is None) and not f.metadata.get("required")
            problems.append((f.name, value, f"must be {expected}" + " or None" * none))
        elif choices and value not in choices:
            problems.append((f.name, value, f"must be one of {', '.join(choices)}"))
        elif plain is not None:
            setattr(c, f.name, plain(value))
    return problems


def problems_line(problems: Sequence[tuple[str, object, str]]) -> str:
    """:func:`type_problems`' answer as one line: each setting as its flag, its value, the rule."""
    return "; ".join(f"--{name} {value!r}: {rule}" for name, value, rule in problems)


def checked_arguments(function: Callable) -> Callable:
    """``function`` (a Python API entry point) with its arguments checked by their annotations
    before it runs, as a config's settings are (:func:`type_problems`): a wrong type is one
    :class:`~runway_cnn.errors.RunwayError` line naming the setting (as its flag), the value and
    what is expected; numpy numbers are passed on as plain ones."""
    signature = inspect.signature(function)
    fields = [SimpleNamespace(name=p.name, type=p.annotation, default=p.default, metadata={})
              for p in signature.parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    @functools.wraps(function)
    def checked(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = SimpleNamespace(**bound.arguments)
        problems = type_problems(values, fields)
        if problems:
            raise RunwayError(problems_line(problems))
        bound.arguments.update(vars(values))  # numpy numbers made plain
        return function(*bound.args, **bound.kwargs)
    return checked


@dataclass
class TaskOptions:
    """A task's own settings, each a ``finetune`` flag of the same name (``--head``,
    ``--attributes`` …); what every task shares (dropout, pooling, the splits) is in
    :class:`~runway_cnn.training.config.FinetuneConfig`. A task without options keeps this empty
    class."""

    def __post_init__(self):
        """Each option of its type and one of its choices (:func:`type_problems`), else a
        ``ValueError`` naming it."""
        problems = type_problems(self, self.fields())
        if problems:
            raise ValueError(problems_line(problems))

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class TaskLabels:
    """Labels and splits: a ``--labels_csv`` row → a raw label → the label space and targets;
    the splitting rule; what the data report counts. Required: :meth:`raw_label` (or
    :meth:`csv_reader`), :meth:`label_space`, :meth:`targets`."""

    labels: list[str]
    options: dict
    stratum = "class"  # what a split keeps in proportion, in messages ("share their class")
    # one label an image: every split can hold every label, and a run refuses a label too rare
    # for that (a --labels_csv as class folders are); labels of several a photo may be rarer
    labels_in_every_split = False
    csv_columns: tuple[str, ...] = ()  # the --labels_csv columns raw_label needs besides filename

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
        """Label values outside the label space, with how often they occur (data report); by
        default none are counted (:meth:`targets` refuses them)."""
        return {}

    def unknown_summary(self, raw_labels: Sequence[Any]) -> dict:
        """What evaluation says of labels outside the label space: ``unknown_labels`` (label →
        occurrences) and ``unknown_label_count`` (their sum)."""
        unknown = self.unknown_labels(raw_labels)
        return {"unknown_labels": unknown, "unknown_label_count": sum(unknown.values())}

    def label_counts(self, targets: np.ndarray) -> dict[str, int]:
        """How many images of ``targets`` carry each label (for the data report and the split
        checks); by default nothing is counted."""
        return {}

    def split(self, targets: np.ndarray, validation_fraction: float, test_fraction: float,
              seed: int, groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Split name → sorted indices of a random split this task's way (stratified); no
        ``"test"`` when ``test_fraction`` is 0; with ``groups`` (a key per image) no group is in
        two splits. ``ValueError`` when too few images (or groups) to split. By default a plain
        random split (stratified on nothing)."""
        return stratified_split(np.zeros(len(targets), int), validation_fraction, test_fraction,
                                seed, groups)

    def kfold(self, targets: np.ndarray, k: int, seed: int, validation_fraction: float,
              groups: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
        """K folds, fold i testing on the i-th; validation carved from the rest; with
        ``groups``, no group in two parts of a fold. By default plain random folds."""
        return kfold_splits(np.zeros(len(targets), int), k, seed, validation_fraction, groups)

    # the audit's questions and the columns of its cleaned manifest
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
        label): ``column=value, …`` of a dict's known cells, a tuple ';'-joined, else the
        label itself."""
        if isinstance(raw, dict):
            return ", ".join(f"{k}={v}" for k, v in raw.items() if v is not None)
        if isinstance(raw, (tuple, list)):
            return ";".join(map(str, raw))
        return str(raw)

    def copies_agree(self, raw_labels: Sequence[Any]) -> tuple[Callable[[Any, Any], bool], str]:
        """How the audit tells whether two copies of one photo carry the same label, in a
        dataset of ``raw_labels``: ``agree(a, b)`` on two raw labels, and what copies that do
        not agree carry, in words (they are a label conflict). By default: the same
        :meth:`raw_text`."""
        return (lambda a, b: self.raw_text(a) == self.raw_text(b)), "different labels"

    def raw_classes(self, raw: Any,
                    blanked: set[str] | frozenset[str] = frozenset()) -> set[str]:
        """The classes an image with raw label ``raw`` is a photo of (those of the attributes in
        ``blanked`` left out): a cleaned manifest keeps a photo of each. A dict's known cells
        as ``column=value``, a tuple's members, else the label itself."""
        if isinstance(raw, dict):
            return {f"{k}={v}" for k, v in raw.items() if v is not None and k not in blanked}
        if isinstance(raw, (tuple, list)):
            return set(map(str, raw))
        return {self.raw_text(raw)}

    def manifest_columns(self) -> list[str]:
        """The ``--labels_csv`` columns besides ``filename`` that give this task back its raw
        labels: by default those :meth:`csv_reader` reads under the task's options."""
        return list(self.csv_reader(**self.options)[1])

    def manifest_cells(self, raw: Any,
                       blanked: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
        """An image's cells of :meth:`manifest_columns` from its raw label (those of the
        attributes in ``blanked`` left empty: unknown): a dict's cells by column, else one
        column, the :meth:`raw_text`."""
        if isinstance(raw, dict):
            return {c: "" if c in blanked else raw.get(c) or "" for c in self.manifest_columns()}
        return dict.fromkeys(self.manifest_columns(), self.raw_text(raw))


class TaskModel:
    """Head and stage-1 solver: the head on pooled features, its loss and metrics, and the
    optional convex solver of stage 1 (and its refit on more photos). Required: :meth:`loss`."""

    labels: list[str]
    options: dict

    def prepare(self, train_targets: np.ndarray) -> None:
        """Learns what the head needs from the training targets before it is built (ML-GCN's
        label graph); most tasks need nothing."""

    def build_head(self, feature_dim: int) -> keras.Model:
        """Pooled backbone features ``[b, feature_dim]`` → logits; by default dropout and a
        dense layer with one logit per label."""
        return classification_head(feature_dim, len(self.labels),
                                   self.options.get("dropout", 0.2))

    def loss(self) -> keras.losses.Loss:
        raise NotImplementedError

    def metrics(self) -> list:
        """Keras metrics of training and validation besides the loss (none by default)."""
        return []

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


class TaskOutputs:
    """Outputs, decoding and evaluation: the exported signatures' outputs, their decoding into
    one result dict per image and how results are shown, and the figures and files of an
    evaluation. Required: :meth:`probabilities`, :meth:`predict_outputs`, :meth:`decode`,
    :meth:`evaluate`."""

    labels: list[str]
    options: dict
    summary_figures: tuple[str, ...] = ("loss",)
    plotted_figures: tuple[str, ...] = ()  # summary figures in [0, 1], drawn side by side
    # the module of the task's figures, files and text (its ``headline(figures)`` and
    # ``format_figures(figures)`` are the task's), or None
    evaluation: ModuleType | None = None

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Logits → the scores evaluation works on."""
        raise NotImplementedError

    def calibrate(self, targets: np.ndarray, scores: np.ndarray) -> dict | None:
        """Fits the task's decision rule on validation targets and scores after training (per-
        label thresholds), kept in :meth:`config`; returns what it chose, or None."""
        return None

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
        return {}

    def top(self, result: dict, k: int) -> dict:
        """``result`` cut to the ``k`` best answers where the task ranks them (``predict``'s
        ``--top_k``)."""
        return result

    def label_groups(self) -> dict[str, list[int]]:
        """Named groups of score columns a similarity query may restrict itself to (attributes:
        one group per attribute); by default one group of them all."""
        return {"all": list(range(len(self.labels)))}

    def describe(self, result: dict, limit: int = 3, groups: Sequence[str] | None = None) -> str:
        """A result in a few words, for captions (and ``predict``'s default CSV column): by
        default the texts of its first ``limit`` :meth:`display_items` (a task with groups of
        labels shows those of ``groups`` only)."""
        return ", ".join(item["text"] for item in self.display_items(result)[:limit])

    def display(self, result: dict) -> dict:
        """A result as the web page shows it, whatever the task: ``{"caption": str, "items":
        [{"text": str, "score": float | None}, ...]}``. ``caption`` is a few words (the
        recommend neighbours' captions: :meth:`describe`, else the first three items' texts);
        ``items`` are lines of text (:meth:`display_items`), each drawn with a bar of its
        ``score`` (a share in [0, 1], printed to 3 decimals) where it has one. The page adds
        the ``error`` and Grad-CAM explanations itself."""
        items = self.display_items(result)
        return {"caption": self.describe(result) or ", ".join(i["text"] for i in items[:3]),
                "items": items}

    def display_items(self, result: dict) -> list[dict]:
        """The lines of :meth:`display`, numbers formatted; by default every entry of
        ``result`` but ``error`` (which the page shows apart), flattened: ``key: text`` for a
        text, a number (3 decimals) or a list of them; ``key: value`` with a bar of ``score``
        for a ``{"value": v, "score": s}`` entry; ``key: sub-key: …`` for other nested dicts;
        nothing for a None (no answer)."""
        return self._flattened({k: v for k, v in result.items() if k != "error"}, ())

    @staticmethod
    def scored_items(texts: Sequence[str], scores: Sequence[float],
                     none: str = "(no label)") -> list[dict]:
        """One line per text with a bar of its score (``none`` alone when there is no text):
        :meth:`display_items` of a task answering with ranked labels."""
        if not texts:
            return [{"text": none, "score": None}]
        return [{"text": t, "score": float(s)} for t, s in zip(texts, scores)]

    @classmethod
    def _flattened(cls, value: Any, path: tuple[str, ...]) -> list[dict]:
        def text(x: Any) -> str:
            return f"{x:.3f}" if isinstance(x, float) else str(x)

        def line(words: str, score: Any = None) -> list[dict]:
            number = isinstance(score, (int, float)) and not isinstance(score, bool)
            return [{"text": ": ".join((*path, words)) if path else words,
                     "score": float(score) if number else None}]

        if value is None:
            return []
        if path and isinstance(value, dict) and set(value) in ({"value"}, {"value", "score"}):
            return [] if value["value"] is None else line(text(value["value"]),
                                                          value.get("score"))
        if isinstance(value, dict):
            return [item for k, v in value.items() for item in cls._flattened(v, (*path, str(k)))]
        if isinstance(value, (list, tuple)):
            if all(not isinstance(v, (dict, list, tuple)) for v in value):
                return line(", ".join(text(v) for v in value if v is not None) or "(none)")
            return [item for v in value for item in cls._flattened(v, path)]
        return line(text(value))

    def csv_header(self, top_k: int) -> list[str]:
        """The columns ``predict`` writes for a result (besides path and error); by default
        one, the result in a few words (:meth:`describe`)."""
        return ["prediction"]

    def csv_cells(self, result: dict, top_k: int) -> list[str]:
        """A result's cells under :meth:`csv_header`."""
        return [self.describe(result, limit=top_k) if result else ""]

    def assets(self) -> dict[str, str]:
        """Files the export carries in ``assets/`` besides its metadata (vocabulary, …)."""
        return {"labels.txt": "\n".join(self.labels) + "\n"}

    def agreement(self, reference: np.ndarray, scores: np.ndarray) -> float:
        """Share of images whose decision from ``scores`` equals that from ``reference`` (how
        far a TFLite file follows its SavedModel); by default the best-scoring column."""
        return float(np.mean(np.argmax(reference, -1) == np.argmax(scores, -1)))

    def evaluate(self, targets: np.ndarray, scores: np.ndarray) -> dict:
        """Figures for ``metrics.json`` and ``eval.json`` (plain JSON types), holding the
        :attr:`monitored_figure` and ``num_examples`` (:meth:`checked_evaluate` checks)."""
        raise NotImplementedError

    def predictions(self, sources: Sequence[str], targets: np.ndarray,
                    scores: np.ndarray) -> list[dict]:
        """One row per image for ``predictions.csv``: source, truth, prediction (by default the
        source only)."""
        return [{"source": source} for source in sources]

    def confident_errors(self, targets: np.ndarray, scores: np.ndarray,
                         n: int) -> dict[str, list[tuple[int, int, str]]]:
        """The ``n`` most confident errors per class (group name → ``(image, label index,
        caption)``, most confident first), the label index being a label :meth:`explained`
        gives for that image (what ``evaluate --explain`` draws the Grad-CAM map of); by
        default none."""
        return {}

    def write_evaluation(self, figures: dict, output_dir: Path, title: str) -> None:
        """The task's evaluation files (CSVs, PNGs) beside ``eval.json``."""

    def figure_name(self, key: str) -> str:
        """What the figure ``key`` is called where it is shown by name (an experiment's
        summary, its plot): by default its key."""
        return key

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


class Task(TaskLabels, TaskModel, TaskOutputs):
    """What training, export and inference need to know about a prediction problem.

    ``labels`` is the label space in target order (classes, tags, or ``attribute=value``
    names); ``monitor`` / ``monitor_mode`` name the Keras validation figure that picks the best
    weights; ``summary_figures`` are the test figures an experiment summarises (mean ± std), the
    first being the headline.
    """

    name = "task"
    monitor = "val_loss"
    monitor_mode = "min"
    options_class: type[TaskOptions] = TaskOptions  # the task's flags

    def __init__(self, labels: Sequence[str], **options):
        self.labels = list(labels)
        self.options = dict(options)

    @classmethod
    def checked_options(cls, options: dict) -> dict:
        """``options`` (the task's flags, as keywords) completed with the defaults of
        :attr:`options_class` and checked there, the one place of both; a value it refuses is
        a one-line :class:`~runway_cnn.errors.DataError`."""
        try:
            return cls.options_class(**options).to_dict()
        except ValueError as error:
            raise DataError(str(error)) from None

    def checked_evaluate(self, targets: np.ndarray, scores: np.ndarray) -> dict:
        """:meth:`evaluate`'s figures, which must hold the :attr:`monitored_figure` (it picks the
        best weights and heads a run's lines) and ``num_examples`` (the commands print it): a
        missing one is a one-line :class:`~runway_cnn.errors.RunwayError` naming the task, the
        method and the key."""
        figures = self.evaluate(targets, scores)
        missing = [key for key in (self.monitored_figure, "num_examples") if key not in figures]
        if missing:
            raise RunwayError(f"task {self.name}: {type(self).__name__}.evaluate returned no "
                              f"{' and no '.join(map(repr, missing))} key (its keys: "
                              f"{', '.join(map(str, figures)) or 'none'}); it must return "
                              f"the monitored figure ({self.monitor} → "
                              f"{self.monitored_figure!r}) and 'num_examples'")
        return figures

    @property
    def monitored_figure(self) -> str:
        """The evaluation figure :attr:`monitor` watches on validation (``val_top1`` →
        ``top1``): a run's headline on any split."""
        return self.monitor.removeprefix("val_")

    # -- persistence -------------------------------------------------------------------------
    def config(self) -> dict:
        """Everything :func:`runway_cnn.tasks.task_from_config` needs to rebuild this task."""
        return {"task": self.name, "labels": list(self.labels), **self.options}
