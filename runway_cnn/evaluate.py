"""``python -m runway_cnn.evaluate --model PATH --dataset_dir D [--split test] [--output_dir O]``:
an exported model's figures on a labelled image folder (TF-Slim's ``eval_image_classifier``).

- PATH: an export version dir, an export base / serving-name dir (its newest version) or a train
  dir (the export its ``metrics.json`` names).
- Which images: if D has split folders (``train/``, ``validation/``, ``test/``), those of the
  ``--split`` folder; otherwise all images of D (the output says so). Files are checked and read
  as for training (``scan_image_folder``); unusable ones are left out and counted.
- Labels: D's class folder names are matched to the model's labels by name; a folder name the
  model does not know is an error naming it. The model may know more classes than D has. With
  ``--labels_csv`` (multi-label), labels the model does not know are left out and counted, with
  the images left with no label (``eval.json``: ``unknown_labels``, ``unknown_label_count``,
  ``images_left_without_labels``).
- Results go to O (default: ``<train dir>/eval/<D name>_<split>/`` for a train dir, else
  ``<serving-name dir>/eval/<version>/<D name>_<split>/``, beside the model and never the current
  directory): ``eval.json`` (everything below), ``per_class.csv``, ``predictions.csv``,
  ``confusion_matrix.csv`` and ``confusion_matrix.png`` (normalised per true class). An O
  holding other files than an earlier evaluation's is refused unless ``--overwrite``.
- Figures (scikit-learn): top-1, top-5, macro-F1, per-class precision / recall / F1 / support over
  the classes that occur in the labels or the predictions, the confusion matrix over all the
  model's labels (rows: true class), and the worst-confused class pairs.
- ``--explain N``: ``error_maps/<nnn>_<class>.png``, the N most confident errors of each class
  (single-label: per true class, the images given another class; multi-label: per label, its
  false positives; attributes: per true value, the cells given another value), each with the
  Grad-CAM map of the label the model gave.
"""
from __future__ import annotations

import argparse

from runway_cnn import cli


def format_evaluation(result: dict) -> str:
    """The figures as text: the summary line, then the task's tables."""
    from runway_cnn.tasks import task_from_config

    task = task_from_config(result["task"])
    unknown = result.get("unknown_label_count", 0)
    emptied = result.get("images_left_without_labels", 0)
    lines = [f"{result['model']} on {result['dataset_dir']}: {result['images']}"
             + (f", {result['skipped_files']} unusable files left out"
                if result["skipped_files"] else ""),
             *([f"{unknown} label(s) the model does not know ("
                + ", ".join(f"{k}: {n}" for k, n in list(result["unknown_labels"].items())[:10])
                + ")" + (f"; {emptied} image(s) left with no label" if emptied else "")]
               if unknown else []),
             *([f"warning: the model learned from {result['images_the_model_learned_from']}"
                f" of these {result['num_examples']} images (its run's refit), so these "
                "figures are not an estimate of how it does on new photos"]
               if result.get("images_the_model_learned_from") else []),
             *(["note: the export does not say which photos it learned from (an export of an "
                "older version, its run's folder gone or moved), so whether these figures are "
                "an estimate on new photos cannot be told"]
               if result.get("images_the_model_learned_from", 0) is None else []),
             f"{task.headline(result)}  ({result['num_examples']} images)", "",
             *task.format_figures(result), "",
             *([f"Grad-CAM maps of the most confident errors of {len(result['error_maps'])} "
                "class(es) in error_maps/"] if result.get("error_maps") is not None else []),
             f"written to {result['output_dir']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from runway_cnn.inference.evaluation import evaluate_model

    parser = argparse.ArgumentParser(prog="python -m runway_cnn.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="export version dir, export base / serving-name dir, or train dir")
    parser.add_argument("--dataset_dir", required=True,
                        help="labelled image folder (class sub-folders, optionally under "
                             "split folders) or a registered dataset name")
    parser.add_argument("--split", default="test",
                        help="split folder to evaluate when the dataset has split folders")
    parser.add_argument("--output_dir", help="where the results go (default: eval/ beside the "
                                             "model)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--labels_csv", help="a CSV manifest of D's images and labels (as for "
                                             "finetune) instead of class folders")
    parser.add_argument("--explain", type=int, default=0, metavar="N",
                        help="draw the N most confident errors of each class with their "
                             "Grad-CAM maps (one grid PNG per class in error_maps/; needs a "
                             "backbone with a feature map)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --output_dir that holds other files (refused "
                             "otherwise; an earlier evaluation's folder is written over)")
    args = parser.parse_args(argv)
    result = evaluate_model(args.model, args.dataset_dir, args.split, args.output_dir,
                            args.batch_size, args.labels_csv, args.explain, args.overwrite)
    print(format_evaluation(result))
    return result


if __name__ == "__main__":
    cli.run(main)
