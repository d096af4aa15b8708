"""An exported model's figures on a labelled image folder (TF-Slim's ``eval_image_classifier``),
written beside the model: ``eval.json``, per-class and prediction CSVs, the confusion matrix."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from runway_cnn.data import folders as data
from runway_cnn.data import pipeline
from runway_cnn.errors import DataError, RunwayError
from runway_cnn.inference.predictor import Predictor
from runway_cnn.runfiles import TrainDir, check_output_dir
from runway_cnn.tasks.single_label import get_task


class EvaluationImages(NamedTuple):
    dataset: data.ImageFolderDataset  # keep it: its temporary folder holds converted copies
    images: data.Split
    split: str  # the split folder, or "all"
    description: str


def evaluation_images(dataset_dir: str | Path, split: str = "test") -> EvaluationImages:
    """The ``split`` folder of a dataset with split folders, else all its images."""
    dataset = data.scan_image_folder(data.resolve_dataset_dir(str(dataset_dir)),
                                     make_splits=False)
    pool = dataset.pooled()
    if dataset.split_settings.get("layout") != "split folders":
        return EvaluationImages(dataset, pool, "all", f"all {len(pool)} images (no split folders)")
    given = dataset.split_settings.get("given_splits", [])
    if split not in given:
        raise DataError(f"{dataset.root} has no {split}/ folder (it has {', '.join(given)}); "
                        "choose one with --split")
    keep = [i for i, s in enumerate(pool.sources) if s.startswith(f"{split}/")]
    images = data.Split([pool.paths[i] for i in keep], pool.labels[keep],
                        [pool.sources[i] for i in keep])
    return EvaluationImages(dataset, images, split, f"the {len(images)} images of {split}/")


def model_label_ids(class_names: list[str], model_labels: list[str], dataset_dir,
                    model_path) -> np.ndarray:
    """Dataset class id → model label id, by name; unknown class names are a clear error."""
    index = {name: i for i, name in enumerate(model_labels)}
    unknown = [c for c in class_names if c not in index]
    if unknown:
        shown = ", ".join(model_labels[:20]) + (" …" if len(model_labels) > 20 else "")
        raise DataError(f"class folder(s) {', '.join(unknown)} of {dataset_dir} are not labels "
                        f"of the model {model_path} (its labels: {shown})")
    return np.array([index[c] for c in class_names], np.int64)


def default_output_dir(model: str | Path, version_dir: Path, dataset_dir: str | Path,
                       split: str) -> Path:
    model = Path(model)
    name = f"{data.resolve_dataset_dir(str(dataset_dir)).name}_{split}"
    files = TrainDir(model)
    if not (model / "saved_model.pb").exists() and (files.metrics.exists()
                                                    or files.config.exists()):
        return model / "eval" / name  # a train dir
    return version_dir.parent / "eval" / version_dir.name / name


def evaluate_model(model: str | Path, dataset_dir: str | Path, split: str = "test",
                   output_dir: str | Path | None = None, batch_size: int = 32) -> dict:
    """Evaluates an export on a labelled folder (see the module docstring), writes the files and
    returns what ``eval.json`` holds (plain JSON types), plus ``output_dir``."""
    check_output_dir(output_dir, "--output_dir")
    if batch_size < 1:
        raise RunwayError(f"--batch_size {batch_size}: must be at least 1")
    classifier = Predictor(model)
    chosen = evaluation_images(dataset_dir, split)
    images = chosen.images
    to_model = model_label_ids(chosen.dataset.class_names, classifier.labels, dataset_dir,
                               classifier.version_dir)
    labels = to_model[images.labels]
    ds = pipeline.eval_dataset(images.paths, None, classifier.spec, batch_size, cache=False)
    probabilities = np.concatenate([classifier.probabilities(b) for b in ds.as_numpy_iterator()])
    result = {"model": str(classifier.version_dir),
              "dataset_dir": str(data.resolve_dataset_dir(str(dataset_dir))),
              "split": chosen.split, "images": chosen.description,
              "skipped_files": len(chosen.dataset.skipped),
              "confusion_labels": list(classifier.labels),
              **get_task(classifier.task, classifier.labels).evaluate(labels, probabilities)}
    predicted = probabilities.argmax(axis=1)
    result["predictions"] = [
        {"source": s, "label": classifier.labels[t], "predicted": classifier.labels[p],
         "score": float(probabilities[i, p])}
        for i, (s, t, p) in enumerate(zip(images.sources, labels, predicted))]
    out = Path(output_dir) if output_dir else default_output_dir(
        model, classifier.version_dir, dataset_dir, result["split"])
    result["output_dir"] = str(out)
    write_evaluation(result, out)
    return result


def write_evaluation(result: dict, output_dir: Path) -> None:
    from runway_cnn.plots import plot_confusion_matrix

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    with (output_dir / "per_class.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for name, m in result["per_class"].items():
            writer.writerow([name, m["precision"], m["recall"], m["f1"], m["support"]])
    with (output_dir / "predictions.csv").open("w", newline="", errors="surrogateescape") as f:
        writer = csv.DictWriter(f, ["source", "label", "predicted", "score"])
        writer.writeheader()
        writer.writerows(result["predictions"])
    names = result["confusion_labels"]
    with (output_dir / "confusion_matrix.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *names])
        writer.writerows([name, *row] for name, row in zip(names, result["confusion_matrix"]))
    matrix = np.asarray(result["confusion_matrix"])
    shown = np.flatnonzero(matrix.sum(axis=0) + matrix.sum(axis=1))  # classes that occur
    plot_confusion_matrix(matrix[np.ix_(shown, shown)], [names[i] for i in shown],
                          output_dir / "confusion_matrix.png",
                          title=f"{Path(result['dataset_dir']).name} ({result['split']}): "
                                f"top-1 {result['top1']:.3f}")
