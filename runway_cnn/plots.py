"""Plots of a run: training curves of both stages (the stage boundary marked); for an experiment
(``--num_splits`` / ``--kfold``) a box plot of the test figures across its runs and each run's
curves; confusion matrices (drawn by the single-label and attributes tasks and the audit); the
audit's, the attribute map's, neighbour and Grad-CAM grids. A plot only one task draws is in that
task's folder (``tasks/<task>/plots.py``).
"""
from __future__ import annotations

import csv
import textwrap
from collections import Counter
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from runway_cnn.json_io import read_json  # noqa: E402
from runway_cnn.train_dir import STAGES, TrainDir  # noqa: E402


def read_history(train_dir: str | Path) -> dict[str, list[dict[str, float]]]:
    """Per stage, the epoch rows Keras' CSVLogger wrote (resumed runs included)."""
    history = {}
    for stage in STAGES:
        path = TrainDir(Path(train_dir)).stage(stage).history
        if path.exists():
            with path.open() as f:
                history[stage] = [{k: float(v) for k, v in row.items() if v not in ("", None)}
                                  for row in csv.DictReader(f)]
    return history


def plot_training_curves(train_dir: str | Path, output: str | Path | None = None) -> Path | None:
    """Loss and the task's first metric (single-label: top-1) per epoch across both stages;
    returns the PNG path (None: no history)."""
    history = read_history(train_dir)
    if not history:
        return None
    output = Path(output or TrainDir(Path(train_dir)).curves)
    logged = [k[4:] for rows in history.values() for k in rows[0] if k.startswith("val_")]
    metric = next((k for k in logged if k != "loss"), "loss")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", metric)):
        offset = 0
        for stage, rows in history.items():
            epochs = [offset + i + 1 for i in range(len(rows))]
            for prefix, style in (("", "-"), ("val_", "--")):
                values = [row.get(prefix + metric) for row in rows]
                if any(v is not None for v in values):
                    ax.plot(epochs, values, style, marker=".",
                            label=f"{stage} {'validation' if prefix else 'train'}")
            offset += len(rows)
            if stage == "stage1" and "stage2" in history:
                ax.axvline(offset + 0.5, color="grey", linestyle=":", label="unfreeze")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"training curves: {Path(train_dir).name}")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def read_summary(experiment_dir: str | Path) -> dict:
    """An experiment's ``summary.json``; a damaged one is a one-line error saying what to do."""
    return read_json(TrainDir(Path(experiment_dir)).summary,
                     fix="run the experiment's command again: it rewrites the summary from the "
                         "runs' done.json files")


def plot_split_accuracy(experiment_dir: str | Path, output: str | Path | None = None) -> Path:
    """Box plot of the test figures of an experiment's runs (its ``summary.json``: the task's
    plotted figures, e.g. single-label's top-1, top-5, macro-F1, else its monitored figure, e.g.
    a regression's RMSE), every run drawn as a dot; returns the PNG path."""
    summary = read_summary(experiment_dir)
    runs = summary["runs"]
    keys = summary.get("plotted_figures") or [summary.get("monitored_figure")
                                              or summary["figures"][0]]
    values = [[r[k] for r in runs] for k in keys]
    output = Path(output or TrainDir(Path(experiment_dir)).split_plot)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.boxplot(values, showmeans=True, widths=0.5)
    ax.set_xticks(range(1, len(keys) + 1),
                  [f"{k}\n{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}"
                   for k, v in zip(keys, values)])
    jitter = np.random.default_rng(0)
    for i, v in enumerate(values, start=1):
        ax.plot(i + jitter.uniform(-0.08, 0.08, len(v)), v, "o", color="tab:blue", alpha=0.6,
                markersize=4)
    ax.set_ylabel("test split")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{summary['runs_finished']} runs ({summary['protocol']}): "
                 f"{Path(summary['dataset_dir']).name}")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], output: str | Path,
                          title: str = "confusion matrix") -> Path:
    """The confusion matrix normalised per true class (each row sums to 1; a row without
    images stays blank), class names on both axes. Sized and lettered for 2 to 100+ classes:
    counts are written into the cells up to 25 classes."""
    counts = np.asarray(matrix, np.float64)
    n = len(class_names)
    support = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(support > 0, counts / support, np.nan)
    side = min(max(6.0, 0.32 * n + 2.5), 40.0)
    font = max(5.0, min(10.0, 300.0 / max(n, 1)))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), [f"{c} ({int(s)})" for c, s in zip(class_names, support[:, 0])],
                  fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (images)")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center",
                            fontsize=font * 0.9,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_title(title)
    return _save(fig, output, dpi=120)


def plot_attribute_map(codes: np.ndarray, colours: Sequence[str], paths: Sequence[str],
                       output: str | Path, title: str, thumbnails: int = 8) -> Path:
    """Items as points on a 2-D map, coloured by a label (the legend's most common first), with
    density contours (a Gaussian KDE) and ``thumbnails`` photos spread over the map (farthest
    points first)."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from PIL import Image

    codes = np.asarray(codes, np.float64)
    fig, ax = plt.subplots(figsize=(9, 7.5))
    names = [n for n, _ in Counter(colours).most_common()]
    palette = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for i, name in enumerate(names):
        chosen = np.array([c == name for c in colours])
        ax.scatter(codes[chosen, 0], codes[chosen, 1], s=10, alpha=0.7,
                   color=palette(i % palette.N), label=f"{name} ({chosen.sum()})")
    if len(codes) > 3 and np.linalg.matrix_rank(codes - codes.mean(axis=0)) == 2:
        from scipy.stats import gaussian_kde

        low, high = codes.min(axis=0), codes.max(axis=0)
        gx, gy = np.mgrid[low[0]:high[0]:80j, low[1]:high[1]:80j]
        density = gaussian_kde(codes.T)(np.vstack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
        ax.contour(gx, gy, density, levels=6, colors="grey", linewidths=0.7, alpha=0.8)
    for i in _spread(codes, thumbnails):
        try:
            with Image.open(paths[i]) as im:
                im = im.convert("RGB")
                im.thumbnail((56, 56))
                ax.add_artist(AnnotationBbox(OffsetImage(np.asarray(im)), codes[i],
                                             frameon=True, pad=0.15))
        except OSError:  # a catalog photo moved since: the point stays, without its picture
            continue
    ax.margins(0.08)  # room for the thumbnails at the edges
    ax.legend(fontsize=7, loc="best", markerscale=1.5, ncol=1 + len(names) // 12)
    ax.set_xlabel("map x")
    ax.set_ylabel("map y")
    ax.set_title(title, fontsize=10)
    return _save(fig, output, dpi=110)


def _spread(points: np.ndarray, count: int) -> list[int]:
    """``count`` indices of points far from each other (greedy farthest-point order)."""
    if not len(points):
        return []
    chosen = [int(np.argmin(np.linalg.norm(points - points.mean(axis=0), axis=1)))]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    while len(chosen) < min(count, len(points)):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return chosen


def plot_neighbour_grid(answers: Sequence[dict], describe, output: str | Path,
                        title: str) -> Path:
    """One row per query: the photo, then its nearest items, each captioned with
    ``describe(result)`` (and the distance)."""
    from PIL import Image

    columns = 1 + max([len(a["neighbours"]) for a in answers] + [0])
    fig, axes = plt.subplots(max(len(answers), 1), columns, squeeze=False,
                             figsize=(2.3 * columns, 2.7 * max(len(answers), 1)))
    for ax in axes.ravel():
        ax.axis("off")
    for row, answer in enumerate(answers):
        cells = [(answer["image"], "query: " + describe(answer["result"]))]
        cells += [(n["path"], f"{n['distance']:.3f}: {describe(n['result'])}")
                  for n in answer["neighbours"]]
        for col, (path, caption) in enumerate(cells):
            ax = axes[row, col]
            try:
                with Image.open(path) as im:
                    ax.imshow(np.asarray(im.convert("RGB")))
            except OSError:
                ax.text(0.5, 0.5, "(missing)", ha="center", va="center")
            ax.set_title("\n".join(textwrap.wrap(caption, 28)[:4]), fontsize=6.5)
    fig.suptitle(title, fontsize=10)
    return _save(fig, output, dpi=100)


def plot_nearest_similarity(cosine: np.ndarray, threshold: float, output: str | Path) -> Path:
    """Histogram of each photo's cosine similarity to its nearest other photo, with the
    near-duplicate threshold: copies pile up at the right of it."""
    cosine = np.clip(np.asarray(cosine, np.float64), -1.0, 1.0)
    low = min(float(cosine.min(initial=1.0)), threshold)  # all copies: every cosine 1, one bar
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(cosine, bins=50, range=(min(low, 0.99), 1.0), color="#4a78b5")
    ax.axvline(threshold, color="#c0392b", linestyle="--", label=f"near-duplicate ({threshold})")
    ax.set_xlabel("cosine similarity to the nearest other photo (frozen features)")
    ax.set_ylabel("photos")
    ax.set_yscale("log")
    ax.legend()
    return _save(fig, output)


def plot_shortcut_check(check: dict, output: str | Path) -> Path:
    """The shortcut check's two balanced accuracies beside their chance levels."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    names = ["label", "group"]
    values = [check["label_balanced_accuracy"], check["group_balanced_accuracy"]]
    chance = [check["label_chance"], check["group_chance"]]
    ax.bar(names, values, color=["#4a78b5", "#c0392b" if check.get("at_risk") else "#999"])
    ax.scatter(names, chance, marker="_", s=900, color="black", label="chance", zorder=3)
    for x, v in enumerate(values):
        ax.text(x, v + 0.02, f"{v:.3f}", ha="center")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("out-of-fold balanced accuracy")
    ax.set_title(f"predicted from the features ({check['groups_with_two_or_more_photos']} "
                 "groups)", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, output)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A Grad-CAM map in [0, 1] over its eval crop (float in [0, 1] or uint8, ``[s, s, 3]``) in
    the jet colormap, blended with weight ``alpha``: uint8 ``[s, s, 3]``."""
    photo = np.asarray(image, np.float32)
    photo = photo / 255.0 if image.dtype == np.uint8 else photo
    heat = matplotlib.colormaps["jet"](np.clip(heatmap, 0.0, 1.0))[..., :3]
    return np.round(255 * ((1 - alpha) * photo + alpha * heat)).clip(0, 255).astype(np.uint8)


def plot_explanation_grid(cells: Sequence[tuple[np.ndarray, str]], output: str | Path,
                          title: str, columns: int = 6) -> Path:
    """Overlays (:func:`overlay_heatmap`) with their captions in a grid, ``columns`` a row."""
    columns = max(1, min(columns, len(cells)))
    rows = max(1, -(-len(cells) // columns))
    fig, axes = plt.subplots(rows, columns, squeeze=False,
                             figsize=(2.2 * columns, 2.5 * rows + 0.4))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (overlay, caption) in zip(axes.ravel(), cells):
        ax.imshow(overlay)
        ax.set_title("\n".join(textwrap.wrap(caption, 30)[:3]), fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, output, dpi=100)


def _save(fig, output: str | Path, dpi: int = 100) -> Path:
    """Lays out, writes (creating the folder) and closes a figure; returns the PNG path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(output, dpi=dpi)
    plt.close(fig)
    return output
