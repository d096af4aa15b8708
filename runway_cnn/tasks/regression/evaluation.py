"""The regression task's figures, files and text: MAE / RMSE / R² (scikit-learn) beside a
baseline that predicts the training targets' mean; matplotlib is imported only to draw."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn import metrics as skm

WORST_SHOWN = 10  # largest errors listed in eval.json


def figures(targets: np.ndarray, values: np.ndarray, training_mean: float) -> dict:
    """The figures of predicted ``values`` against ``targets`` (``[n, 1]`` each), and those of
    always predicting ``training_mean`` (the figure a model must beat to have learnt anything).
    R² is None, ``r2_undefined`` saying why, below two images or two values (R² compares the
    errors with the targets' spread; scikit-learn gives 1.0 or 0.0 where there is none)."""
    y, p = np.asarray(targets, np.float64).reshape(-1), np.asarray(values, np.float64).reshape(-1)
    baseline = np.full_like(y, training_mean)
    errors = np.abs(p - y)
    worst = np.argsort(-errors, kind="stable")[:WORST_SHOWN]
    undefined = ("fewer than two images" if len(y) < 2 else
                 f"every target is {y[0]:.6g}: no spread to explain" if np.ptp(y) == 0 else None)
    return {
        "num_examples": int(len(y)),
        "mae": float(skm.mean_absolute_error(y, p)),
        "rmse": float(np.sqrt(skm.mean_squared_error(y, p))),
        "r2": None if undefined else float(skm.r2_score(y, p)),
        **({"r2_undefined": undefined} if undefined else {}),
        "median_absolute_error": float(skm.median_absolute_error(y, p)),
        "baseline_mae": float(skm.mean_absolute_error(y, baseline)),
        "baseline_rmse": float(np.sqrt(skm.mean_squared_error(y, baseline))),
        "training_mean": float(training_mean),
        "loss": float(skm.mean_squared_error(y, p)),
        "largest_errors": [{"image": int(i), "true": float(y[i]), "predicted": float(p[i])}
                           for i in worst],
        "true": y.tolist(), "predicted": p.tolist(),
    }


def prediction_rows(sources: Sequence[str], targets: np.ndarray, values: np.ndarray,
                    name: str) -> list[dict]:
    y, p = np.asarray(targets).reshape(-1), np.asarray(values).reshape(-1)
    return [{"source": s, name: float(t), "predicted": float(v), "error": float(v - t)}
            for s, t, v in zip(sources, y, p)]


def largest_errors(targets: np.ndarray, values: np.ndarray,
                   n: int) -> dict[str, list[tuple[int, int, str]]]:
    """The ``n`` images predicted furthest from their targets (Grad-CAM of the one output)."""
    y, p = np.asarray(targets).reshape(-1), np.asarray(values).reshape(-1)
    worst = np.argsort(-np.abs(p - y), kind="stable")[:n]
    return {"largest errors": [(int(i), 0, f"{y[i]:.4g} → {p[i]:.4g}") for i in worst]} \
        if len(worst) else {}


def write_files(figures: dict, output_dir: Path, title: str, name: str) -> None:
    """``predicted_vs_true.png``: each image's prediction against its target, the diagonal
    and the baseline's line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, p = np.asarray(figures["true"]), np.asarray(figures["predicted"])
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, p, s=10, alpha=0.6)
    low, high = (float(min(y.min(), p.min())), float(max(y.max(), p.max()))) if len(y) else (0, 1)
    ax.plot([low, high], [low, high], color="grey", linewidth=1, label="perfect")
    ax.axhline(figures["training_mean"], color="orange", linewidth=1, label="training mean")
    ax.set_xlabel(f"true {name}")
    ax.set_ylabel(f"predicted {name}")
    r2 = figures["r2"]
    ax.set_title(f"{title}: MAE {figures['mae']:.4g}" + (f", R² {r2:.3f}" if r2 is not None
                                                           else ""))
    ax.legend()
    fig.tight_layout()
    fig.savefig(output_dir / "predicted_vs_true.png", dpi=100)
    plt.close(fig)
    with (output_dir / "largest_errors.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "true", "predicted"])
        writer.writerows([e["image"], e["true"], e["predicted"]] for e in figures["largest_errors"])


def headline(figures: dict) -> str:
    r2 = figures.get("r2")
    r2_text = (f"{r2:.3f}" if r2 is not None
               else f"undefined ({figures.get('r2_undefined', 'fewer than two images')})")
    return (f"MAE {figures['mae']:.4g}  RMSE {figures['rmse']:.4g}  R² {r2_text}  "
            f"(predicting the mean: MAE {figures['baseline_mae']:.4g})")


def format_figures(figures: dict) -> list[str]:
    return [f"median absolute error {figures['median_absolute_error']:.4g}; the baseline "
            f"predicts the training mean {figures['training_mean']:.4g} for every image "
            f"(RMSE {figures['baseline_rmse']:.4g})"]
