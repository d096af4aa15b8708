"""The regression task: targets, head, losses, export outputs and decoding (its figures are in
:mod:`runway_cnn.tasks.regression.evaluation`)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.data.splits import kfold_splits, stratified_split
from runway_cnn.errors import DataError
from runway_cnn.tasks.base import Task, TaskOptions, option
from runway_cnn.tasks.heads import feature_scale, fold_standardisation
from runway_cnn.tasks.regression import evaluation

TARGET_COLUMN = "value"  # the --labels_csv column read by default
LOSSES = ("mse", "huber")
# ridge strengths stage 1 chooses from, for standardised features and targets
ALPHA_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
MAX_BINS = 5  # quantile bins of the target that random splits are stratified on
# two copies of a photo whose values differ by more than this share of the dataset's standard
# deviation are a label conflict for the audit (a photo priced 100 and its copy at 101: one item)
COPY_TOLERANCE = 0.1


@dataclass
class RegressionOptions(TaskOptions):
    target_column: str = option(TARGET_COLUMN, "regression: the --labels_csv column holding each "
                                         "image's number (a price, a rating)")
    loss: str = option("huber", "regression loss of stage 2: mse, or huber (squared within one "
                                "standard deviation of the training targets, linear beyond: "
                                "robust to a few extreme prices)", choices=LOSSES)


# a plain decimal number as a spreadsheet writes it: no digit separators ("1_000", Python
# syntax), no other scripts' digits, no "nan" / "inf"
PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
LARGEST = float(np.finfo(np.float32).max)  # the model computes in float32


def parse_value(cell: Any, column: str) -> float:
    """A CSV cell as a plain, finite number the float32 model can hold; ``ValueError`` naming
    the column otherwise."""
    text = (cell or "").strip() if isinstance(cell, str) or cell is None else str(cell)
    if not text:
        raise ValueError(f"no {column!r} value")
    if not PLAIN_NUMBER.fullmatch(text):
        if text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise ValueError(f"{column!r} value {text!r} is not a finite number")
        raise ValueError(f"{column!r} value {text!r} is not a number")
    value = float(text)
    if not math.isfinite(value) or abs(value) > LARGEST:
        raise ValueError(f"{column!r} value {text!r} is beyond float32's range (±{LARGEST:.1e}),"
                         " in which the model computes")
    return value


class RegressionTask(Task):
    """One number per image. ``labels`` is ``[target_column]``; targets are float32 ``[n, 1]``;
    the head's ``logits`` layer predicts the standardised target and a fixed ``value`` layer
    turns it back into the target's units (``target_mean``, ``target_std``: the training
    targets', learned by :meth:`prepare`). Results are ``{"value": …}``."""

    name = "regression"
    monitor = "val_rmse"
    monitor_mode = "min"
    summary_figures = ("mae", "rmse", "r2", "baseline_mae", "baseline_rmse")
    stratum = "value range"  # a quantile bin of the target (split)
    options_class = RegressionOptions
    evaluation = evaluation

    def __init__(self, labels: Sequence[str], dropout: float = 0.2, target_mean: float = 0.0,
                 target_std: float = 1.0, **options):
        options = self.checked_options(options)  # target_column, loss
        if len(labels) != 1:
            raise DataError(f"a regression predicts one number, not {len(labels)} labels")
        super().__init__(labels, **options, dropout=dropout, target_mean=float(target_mean),
                         target_std=float(target_std))
        self.target_column, self.loss_name = options["target_column"], options["loss"]
        self.dropout = dropout

    @property
    def mean(self) -> float:
        return self.options["target_mean"]

    @property
    def std(self) -> float:
        return self.options["target_std"]

    # -- labels and targets --
    @classmethod
    def raw_label(cls, row: dict) -> float:
        return parse_value(row.get(TARGET_COLUMN), TARGET_COLUMN)

    @classmethod
    def csv_reader(cls, target_column: str = TARGET_COLUMN,
                   **options) -> tuple[Callable[[dict], float], tuple[str, ...]]:
        return (lambda row: parse_value(row.get(target_column), target_column)), (target_column,)

    @classmethod
    def labels_csv_needed(cls, target_column: str = TARGET_COLUMN, **options) -> str:
        return (f"a regression needs --labels_csv with a {target_column!r} column (a number per "
                "photo; class folder names are not values)")

    @classmethod
    def label_space(cls, raw_labels: Sequence[Any], target_column: str = TARGET_COLUMN,
                    **options) -> list[str]:
        return [target_column]

    def targets(self, raw_labels: Sequence[Any], where: str) -> np.ndarray:
        try:
            values = [parse_value(r, self.target_column) for r in raw_labels]
        except ValueError as error:
            raise DataError(f"{where}: {error}") from None
        return np.asarray(values, np.float32).reshape(-1, 1)

    def check_learnable(self, targets: np.ndarray, where: str) -> None:
        """One value in every row: a model would learn the constant and score R² 1.000."""
        values = np.unique(np.asarray(targets).reshape(-1))
        if len(values) == 1:
            raise DataError(f"{where}: column {self.target_column!r} is {values[0]:.6g} in every "
                            f"usable row ({len(targets)}): a constant target leaves nothing to "
                            "learn; label photos of different values")

    def unknown_labels(self, raw_labels: Sequence[Any]) -> dict[str, int]:
        return {}  # every number is in the label space

    def label_counts(self, targets: np.ndarray) -> dict[str, int]:
        return {self.labels[0]: int(len(targets))}

    def copies_agree(self, raw_labels: Sequence[Any]) -> tuple[Callable[[Any, Any], bool], str]:
        """Two copies' values agree within :data:`COPY_TOLERANCE` of the values' standard
        deviation: numbers that differ a little are one value, not a label conflict."""
        values = self.targets(raw_labels, "the audit's labels").reshape(-1)
        tolerance = COPY_TOLERANCE * float(np.std(values))
        return (lambda a, b: abs(float(a) - float(b)) <= tolerance), (
            f"values more than {tolerance:.4g} apart ({COPY_TOLERANCE:g} standard deviation of "
            f"the {self.target_column!r} values)")

    def split(self, targets, validation_fraction, test_fraction, seed, groups=None):
        """Random, stratified on quantile bins of the target (each split sees cheap and dear)."""
        fractions = [f for f in (validation_fraction, test_fraction) if f > 0]
        return stratified_split(_bins(targets, min(fractions)), validation_fraction,
                                test_fraction, seed, groups)

    def kfold(self, targets, k, seed, validation_fraction, groups=None):
        return kfold_splits(_bins(targets, min(1 / k, validation_fraction)), k, seed,
                            validation_fraction, groups)

    # -- model --
    def prepare(self, train_targets: np.ndarray) -> None:
        """The training targets' mean and standard deviation, which the head's ``value`` layer
        and the Huber loss's threshold use."""
        values = np.asarray(train_targets, np.float64).reshape(-1)
        std = float(values.std()) if len(values) else 1.0
        self.options.update(target_mean=float(values.mean()) if len(values) else 0.0,
                            target_std=std if std > 0 else 1.0)

    def build_head(self, feature_dim: int) -> keras.Model:
        features = keras.Input((feature_dim,), name="features")
        x = (keras.layers.Dropout(self.dropout, name="dropout")(features) if self.dropout
             else features)
        z = keras.layers.Dense(1, name="logits", dtype="float32")(x)
        value = keras.layers.Rescaling(self.std, offset=self.mean, name="value",
                                       dtype="float32")(z)
        return keras.Model(features, value, name="head")

    def loss(self) -> keras.losses.Loss:
        if self.loss_name == "huber":
            return keras.losses.Huber(delta=self.std, name="huber")
        return keras.losses.MeanSquaredError(name="mse")

    def metrics(self) -> list:
        return [keras.metrics.MeanAbsoluteError(name="mae"),
                keras.metrics.RootMeanSquaredError(name="rmse")]

    def fit_head_convex(self, head, features, targets, val_features, val_targets):
        """scikit-learn's ridge regression on standardised features (the floored scale of
        :func:`~runway_cnn.tasks.heads.feature_scale`) and standardised targets, alpha
        from ``ALPHA_GRID`` by validation RMSE, copied into the head's ``logits`` layer with the
        standardisation folded in."""
        from sklearn.linear_model import Ridge

        mean, scale = feature_scale(features)
        x, val_x = (features - mean) / scale, (val_features - mean) / scale
        z = (np.asarray(targets, np.float64).reshape(-1) - self.mean) / self.std
        val_y = np.asarray(val_targets, np.float64).reshape(-1)
        tried, best = [], None
        for alpha in ALPHA_GRID:
            model = Ridge(alpha=alpha).fit(x, z)
            predicted = model.predict(val_x) * self.std + self.mean
            rmse = float(np.sqrt(np.mean((predicted - val_y) ** 2)))
            tried.append({"alpha": alpha, "val_rmse": rmse})
            if best is None or rmse < best[0]:
                best = (rmse, alpha, model)
        _, alpha, model = best
        _set_head(head, model, mean, scale)
        return {"solver": "ridge", "standardized": True, "alpha": alpha, "tried": tried}

    def refit_head_convex(self, head, features, targets, solved):
        """The same ridge regression with the alpha stage 1 chose, on these (more) images (the
        targets standardised as in training: the head's ``value`` layer keeps that scale)."""
        from sklearn.linear_model import Ridge

        mean, scale = feature_scale(features)
        z = (np.asarray(targets, np.float64).reshape(-1) - self.mean) / self.std
        _set_head(head, Ridge(alpha=solved["alpha"]).fit((features - mean) / scale, z), mean,
                  scale)
        return {"solver": "ridge", "standardized": True, "alpha": solved["alpha"]}

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits, np.float32).reshape(-1, 1)  # the head already gives values

    # -- export and inference --
    def predict_outputs(self, logits, top_k):
        """``value`` per image, and ``probabilities``: the ``[b, 1]`` values under the name
        every export gives the scores evaluation works on."""
        values = tf.cast(logits, tf.float32)
        return {"value": values[:, 0], "probabilities": values}

    def decode(self, outputs: dict[str, np.ndarray], error: str) -> list[dict]:
        """``{"value": number}`` per image; an undecodable image's ``{"value": None, "error":
        ...}``."""
        values, valid = outputs["value"], outputs.get("valid")
        return [{**self.empty_result(), "error": error}
                if valid is not None and not bool(valid[i]) else {"value": float(values[i])}
                for i in range(len(values))]

    def empty_result(self) -> dict:
        return {"value": None}

    def describe(self, result: dict, limit: int = 3, groups: Sequence[str] | None = None) -> str:
        value = result.get("value")
        return "" if value is None else f"{self.labels[0]} {value:.4g}"

    def csv_header(self, top_k: int) -> list[str]:
        return [self.labels[0]]

    def csv_cells(self, result: dict, top_k: int) -> list[str]:
        value = result.get("value")
        return ["" if value is None else f"{value:.6g}"]

    # -- evaluation (the figures themselves: evaluation.py) --
    def agreement(self, reference, scores):
        """Share of images whose values agree within a thousandth of the targets' spread."""
        return float(np.mean(np.abs(np.asarray(scores) - np.asarray(reference))
                             <= 1e-3 * self.std))

    def evaluate(self, targets, scores):
        return evaluation.figures(targets, scores, self.mean)

    def predictions(self, sources, targets, scores):
        return evaluation.prediction_rows(sources, targets, scores, self.labels[0])

    def confident_errors(self, targets, scores, n):
        return evaluation.largest_errors(targets, scores, n)

    def write_evaluation(self, figures: dict, output_dir: Path, title: str) -> None:
        evaluation.write_files(figures, output_dir, title, self.labels[0])


def _bins(targets: np.ndarray, smallest_fraction: float) -> np.ndarray:
    """Quantile bin of each target, as many bins (up to ``MAX_BINS``) as the smallest split
    can hold one image of each."""
    values = np.asarray(targets, np.float64).reshape(-1)
    count = int(max(1, min(MAX_BINS, math.floor(len(values) * smallest_fraction))))
    edges = np.quantile(values, np.linspace(0, 1, count + 1)[1:-1]) if count > 1 else []
    return np.digitize(values, edges).astype(np.int32)


def _set_head(head: keras.Model, model, mean: np.ndarray, scale: np.ndarray) -> None:
    """Copies a ridge regression on ``(x - mean) / scale`` into the head's ``logits`` layer, the
    standardisation folded in."""
    kernel, bias = fold_standardisation(model.coef_, model.intercept_, mean, scale)
    head.get_layer("logits").set_weights([kernel.reshape(-1, 1).astype("float32"),
                                          np.array([bias], "float32")])
