"""An exported model's figures on a labelled image folder (TF-Slim's ``eval_image_classifier``),
written beside the model: ``eval.json``, per-class and prediction CSVs, the confusion matrix."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

from runway_cnn.data import folders as data
from runway_cnn.data import pipeline
from runway_cnn.data.dataset import Split
from runway_cnn.data.manifest import scan_labels_csv
from runway_cnn.data.source import dataset_source
from runway_cnn.errors import CheckpointError, DataError, RunwayError
from runway_cnn.export_dir import read_learned_keys
from runway_cnn.inference.batch import safe_name
from runway_cnn.inference.predictor import Predictor
from runway_cnn.json_io import read_json, write_json
from runway_cnn.output_checks import check_output_dir, check_own_output, has_keys
from runway_cnn.plots import overlay_heatmap, plot_explanation_grid
from runway_cnn.tasks import Task
from runway_cnn.tasks.base import checked_arguments
from runway_cnn.train_dir import TrainDir
from runway_cnn.training.datasets import read_records

EVAL_JSON = "eval.json"


class EvaluationImages(NamedTuple):
    keep_alive: object  # the scan: its temporary folder holds converted copies
    images: Split
    split: str  # the split folder, or "all"
    description: str
    skipped: int  # unusable files (and bad manifest rows) left out
    root: Path  # the dataset dir, resolved


def evaluation_images(dataset_dir: str | Path, split: str = "test", labels_csv=None,
                      task: Task | None = None) -> EvaluationImages:
    """The rows of a ``labels_csv`` manifest (read the ``task``'s way), else the ``split`` of a
    TFRecord directory or the ``split`` folder of a dataset with split folders, else all its
    images."""
    kind, root = dataset_source(dataset_dir, labels_csv)
    if kind == "tfrecords":
        records, _ = read_records(root)  # checked against its dataset.json
        if split not in records.splits:
            raise DataError(f"{records.root} has no {split} split (it has "
                            f"{', '.join(records.splits)}); choose one with --split")
        images = records.splits[split]
        return EvaluationImages(records, images, split,
                                f"the {len(images)} records of its {split} split",
                                len(records.skipped), root)
    if kind == "manifest":
        raw_label, columns = task.csv_reader(**task.options)
        rows = scan_labels_csv(root, labels_csv, raw_label, columns=columns, task=task.name)
        images = Split(rows.paths, np.zeros(len(rows.paths)), rows.sources, rows.raw_labels)
        return EvaluationImages(rows.tmpdir, images, "all",
                                f"the {len(images)} usable rows of {rows.csv_path}",
                                len(rows.bad_rows) + len(rows.skipped), root)
    why = task.labels_csv_needed(**task.options) if task is not None else None
    if why:
        raise DataError(f"--dataset_dir {root} without --labels_csv: to evaluate this model, "
                        f"{why}")
    dataset = data.scan_image_folder(root, make_splits=False)
    pool = dataset.pooled()
    if dataset.split_settings.get("layout") != "split folders":
        return EvaluationImages(dataset, pool, "all", f"all {len(pool)} images (no split folders)",
                                len(dataset.skipped), root)
    given = dataset.split_settings.get("given_splits", [])
    if split not in given:
        raise DataError(f"{dataset.root} has no {split}/ folder (it has {', '.join(given)}); "
                        "choose one with --split")
    images = pool.subset(np.array([i for i, s in enumerate(pool.sources)
                                   if s.startswith(f"{split}/")], int))
    own = [item for item in dataset.skipped if item["path"].startswith(f"{split}/")]
    return EvaluationImages(dataset, images, split, f"the {len(images)} images of {split}/",
                            len(own), root)


def default_output_dir(model: str | Path, version_dir: Path, dataset_dir: str | Path,
                       split: str) -> Path:
    model = Path(model)
    name = f"{data.dataset_name(str(dataset_dir))}_{split}"
    files = TrainDir(model)
    if not (model / "saved_model.pb").exists() and (files.metrics.exists()
                                                    or files.config.exists()):
        return model / "eval" / name  # a train dir
    return version_dir.parent / "eval" / version_dir.name / name


@checked_arguments
def evaluate_model(model: str | Path, dataset_dir: str | Path, split: str = "test",
                   output_dir: str | Path | None = None, batch_size: int = 32,
                   labels_csv: str | Path | None = None, explain: int = 0,
                   overwrite: bool = False) -> dict:
    """Evaluates an export on a labelled folder (see the module docstring), writes the files and
    returns what ``eval.json`` holds (plain JSON types), plus ``output_dir``. Labels the model
    does not know are counted (``unknown_label_count``, and the task's own counts such as
    ``images_left_without_labels``), never silently dropped. With ``explain`` > 0, the
    ``explain`` most confident errors of each class are drawn with their Grad-CAM maps
    (:func:`write_error_maps`). An output folder holding other files than an earlier
    evaluation's is refused unless ``overwrite``."""
    inputs = [("--dataset_dir", dataset_dir), ("--labels_csv", labels_csv)]
    check_output_dir(output_dir, "--output_dir", inputs)
    if output_dir is not None:
        _check_own(output_dir, overwrite)
    if batch_size < 1:
        raise RunwayError(f"--batch_size {batch_size}: must be at least 1")
    if explain < 0:
        raise RunwayError(f"--explain {explain}: give a number of errors per class (0: none)")
    classifier = Predictor(model)
    if explain:
        classifier.require_explain()
    task = classifier.task
    chosen = evaluation_images(dataset_dir, split, labels_csv, task)
    out = Path(output_dir) if output_dir else default_output_dir(
        model, classifier.version_dir, dataset_dir, chosen.split)
    if output_dir is None:  # a given one was checked before the model loaded
        check_output_dir(out, "the default --output_dir", inputs)
        _check_own(out, overwrite)
    images = chosen.images
    targets = task.targets(images.raw_labels, where=f"{labels_csv or dataset_dir} (the model "
                                                    f"{classifier.version_dir})")
    scores = pipeline.predict_in_order(classifier.probabilities, images.paths, classifier.spec,
                                       batch_size)
    learned = learned_from(classifier.version_dir, classifier.meta.get("refit"),
                           chosen.root, images)
    result = {"model": str(classifier.version_dir),
              "dataset_dir": str(chosen.root),
              "split": chosen.split, "images": chosen.description,
              "skipped_files": chosen.skipped, "task": task.config(),
              **(task.unknown_summary(images.raw_labels) if images.raw_labels is not None
                 else {}),
              **task.checked_evaluate(targets, scores),
              "images_the_model_learned_from": learned,
              "predictions": task.predictions(images.sources, targets, scores)}
    result["output_dir"] = str(out)
    if explain:
        result["error_maps"] = write_error_maps(classifier, images, targets, scores, explain,
                                                out / ERROR_MAPS, batch_size)
    write_evaluation(result, out, task)
    return result


def _check_own(output_dir: str | Path, overwrite: bool) -> None:
    check_own_output(output_dir, EVAL_JSON, has_keys("model", "dataset_dir", "split"), ("*",),
                     overwrite, "--output_dir")


def learned_from(version_dir: Path, refit: dict | None, root: Path, images: Split
                 ) -> int | None:
    """How many of ``images`` the export in ``version_dir`` learned from: by content, through
    the keys of those photos its export keeps (wherever the photos lie now: the run's own
    folders, a copy, a move); for an export without them, by the splits its run's refit
    trained on (the run's ``splits.json``) when ``root`` is the run's dataset; None when that
    cannot be told (an export without a refit record, another folder, its run's folder
    gone)."""
    keys = read_learned_keys(version_dir)
    if keys is not None:
        return sum(key in keys for key in pipeline.content_keys(images.paths))
    if not refit or not refit.get("train_dir") or not refit.get("dataset_root"):
        return None
    if Path(refit["dataset_root"]).resolve() != Path(root).resolve():
        return None
    if "all" in refit.get("splits", []):  # an experiment's export: every usable photo
        return len(images)
    try:
        splits = read_json(TrainDir(Path(refit["train_dir"])).splits, fix="")
    except CheckpointError:  # the run's folder is gone or damaged
        return None
    seen = {item["source"] for name in refit.get("splits", ["train"])
            for item in splits.get(name, [])}
    return sum(source in seen for source in images.sources)


ERROR_MAPS = "error_maps"  # evaluate --explain's folder inside the evaluation output


def write_error_maps(classifier: Predictor, images: Split, targets: np.ndarray,
                     scores: np.ndarray, n: int, folder: Path, batch_size: int) -> dict:
    """For each class (the task's groups: true classes, labels, attribute values), a grid PNG of
    its ``n`` most confident errors, each the eval crop with the Grad-CAM map of the label the
    model wrongly gave. Returns group → ``{"png": file name, "errors": [{"source", "caption"}]}``
    for ``eval.json``."""
    errors = classifier.task.confident_errors(targets, scores, n)
    chosen = sorted({i for items in errors.values() for i, _, _ in items})
    if not chosen:
        return {}
    crops = pipeline.eval_crops([images.paths[i] for i in chosen], classifier.spec, batch_size)
    explained = dict(zip(chosen, classifier.explain_crops(crops)))
    crop_of = dict(zip(chosen, crops))
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for k, (group, items) in enumerate(errors.items()):
        cells = []
        for i, label, caption in items:
            maps = [e["heatmap"] for e in explained[i]["explanations"]
                    if e["label"] == classifier.labels[label]]
            heatmap = maps[0] if maps else np.zeros(crop_of[i].shape[:2], np.float32)
            cells.append((overlay_heatmap(crop_of[i], heatmap), caption))
        name = f"{k:03d}_{safe_name(group)}.png"
        plot_explanation_grid(cells, folder / name,
                              f"{group}: the {len(items)} most confident error(s), Grad-CAM of "
                              "the label given")
        written[group] = {"png": f"{ERROR_MAPS}/{name}", "errors": [
            {"source": images.sources[i], "caption": caption} for i, _, caption in items]}
    return written


def write_evaluation(result: dict, output_dir: Path, task: Task) -> None:
    """``eval.json``, ``predictions.csv`` and the task's own files (single-label: per-class and
    confusion-matrix CSVs, the confusion matrix PNG)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / EVAL_JSON, result)
    with (output_dir / "predictions.csv").open("w", newline="", errors="surrogateescape") as f:
        writer = csv.DictWriter(f, list(result["predictions"][0]) if result["predictions"]
                                else ["source"])
        writer.writeheader()
        writer.writerows(result["predictions"])
    task.write_evaluation(result, output_dir,
                          title=f"{Path(result['dataset_dir']).name} ({result['split']})")
