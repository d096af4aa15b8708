"""Repeated experiments, the way the brand-classification paper measured: N stratified random
splits (``--num_splits``) or stratified K-fold (``--kfold``) over all images of a dataset, one run
per split in ``<train_dir>/split_NN/`` (``fold_NN/``), then ``summary.json`` and ``summary.csv``
with every run's figures and their mean, standard deviation, min and max.

- Splits: given ``train/`` / ``validation/`` / ``test/`` folders are pooled; the experiment draws
  its own splits from all images, as the paper did. Random split i uses seed ``seed + i`` (for the
  split and for the run's initialisation and shuffling), so on a folder without split folders
  ``split_03`` holds exactly the split of a single run with ``--seed <seed+3>``. K-fold splits
  with ``seed``; fold i tests on the i-th fold, and its validation share is carved (stratified)
  from the other folds; fold i trains with seed ``seed + i``.
- Shared work: the backbone is built once; the eval-transformed image and the frozen backbone's
  features of every image are computed once (features are kept in ``<train_dir>/features.npz``
  for a resumed experiment) and indexed per run, so stage 1 and the evaluation of a frozen
  backbone cost only the head. Each run gets a new head, and the backbone is reset to its
  pre-trained weights before each run (stage 2 changes them). Stage 2 still decodes its training
  files per run: its random crops are cut from the whole image.
- The runs are not exported (``model.weights.h5`` is in each run's folder) and not refit. With
  ``--export_dir`` the experiment exports one model: stage 1's head refit on every labelled photo
  with the median of the runs' choices (:func:`refit_experiment`), whatever ``--refit`` says
  (``train_val`` says so in one line; ``none`` with ``--export_dir`` is refused before any run);
  a fine-tuned backbone needs one run without ``--num_splits``. A ``test/`` folder the user gave
  is pooled like the others, and one line says so.
- Resume: the same command again skips finished runs (``<run>/done.json``) and resumes the
  interrupted run at its stage and epoch.
"""
from __future__ import annotations

import csv
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from runway_cnn.backbones.factory import Backbone
from runway_cnn.backbones.features import extract_features, load_features, save_features
from runway_cnn.data.dataset import ImageDataset, Split
from runway_cnn.data.groups import too_few_groups
from runway_cnn.data.source import dataset_source
from runway_cnn.data.splits import TooFewGroups
from runway_cnn.errors import DataError, RunwayError
from runway_cnn.json_io import read_json, write_json
from runway_cnn.tasks import Task, task_from_config
from runway_cnn.train_dir import TrainDir
from runway_cnn.training.callbacks import best_epoch
from runway_cnn.training.config import FinetuneConfig
from runway_cnn.training.datasets import load_dataset
from runway_cnn.training.device import configure_device
from runway_cnn.training.distribution import make_distribution
from runway_cnn.training.refit import combine_choices, given_test_split, write_learned_keys
from runway_cnn.training.result import RunResult
from runway_cnn.training.resume import check_resume
from runway_cnn.training.trainer import FineTuner, build_backbone, classifier

TIMES = ("stage1_seconds", "stage2_seconds", "run_seconds")


def summary_figures(task: Task) -> dict[str, str]:
    """The task's test figures an experiment summarises: their keys in a run's figures → their
    names in the summary (the names the runs' lines print: ``top4`` on four classes)."""
    return {key: task.figure_name(key) for key in task.summary_figures}


def columns(task: Task) -> tuple[str, ...]:
    """A run's row in ``summary.csv``: the task's test figures, its validation figure, times."""
    return ("run", "seed", "num_train", "num_validation", "num_test",
            *summary_figures(task).values(), _validation_figure(task), *TIMES)


def aggregated(task: Task) -> tuple[str, ...]:
    """What the summary gives mean ± std / min / max of."""
    return (*summary_figures(task).values(), _validation_figure(task), *TIMES)


def _validation_figure(task: Task) -> str:
    return "validation_" + task.monitored_figure


@dataclass(frozen=True)
class RunPlan:
    """One run of an experiment: its folder name, seed and split (indices into the pool)."""

    name: str
    seed: int
    indices: dict[str, np.ndarray]


def check_experiment(config: FinetuneConfig) -> None:
    """Raises a one-line error for inconsistent experiment flags."""
    if config.num_splits < 0 or config.kfold < 0:
        raise RunwayError("--num_splits and --kfold must not be negative")
    if config.num_splits and config.kfold:
        raise RunwayError("give --num_splits or --kfold, not both")
    if config.strategy == "multi_worker" and (config.num_splits or config.kfold):
        raise RunwayError("--strategy multi_worker trains one run; run --num_splits / --kfold "
                          "experiments on one machine")
    if config.kfold == 1:
        raise RunwayError("--kfold needs at least 2 folds")
    if config.num_splits and config.test_fraction <= 0:
        raise RunwayError("--num_splits needs --test_fraction > 0 (the runs are compared on "
                          "their test splits)")
    if (config.num_splits or config.kfold) and config.export_dir and config.refit == "none":
        raise RunwayError("--refit none with --export_dir: an experiment exports one model, "
                          "refit on every labelled photo (its runs are not exported); drop "
                          "--refit none to export it, or --export_dir to export nothing")


def experiment_notes(config: FinetuneConfig, dataset: ImageDataset) -> list[str]:
    """Lines an experiment prints where it learns from other photos than ``--refit`` promises
    a single run: it pools a test split the user gave (its runs draw their own), and its export
    learns from every photo whatever the rule."""
    notes = []
    if given_test_split(dataset) and len(dataset.splits.get("test", ())):
        notes.append("note: the experiment pools the test split you gave with the other photos: "
                     "its runs draw their own test splits from all of them (each trains on part "
                     "of yours)" + (", and its export learns from every one"
                                    if config.export_dir else ""))
    if config.export_dir and config.refit == "train_val":
        notes.append("note: --refit train_val: an experiment has no one validation or test "
                     "split to keep out; its export learns from every labelled photo")
    return notes


def plan_runs(config: FinetuneConfig, task: Task, targets: np.ndarray,
              groups: np.ndarray | None = None) -> list[RunPlan]:
    """The runs of ``config``'s experiment over images with these targets, split the task's
    way (no group in two parts of a run's split)."""
    check_experiment(config)
    try:
        if config.num_splits:
            return [RunPlan(f"split_{i:02d}", config.seed + i,
                            task.split(targets, config.validation_fraction,
                                       config.test_fraction, config.seed + i, groups=groups))
                    for i in range(config.num_splits)]
        folds = task.kfold(targets, config.kfold, config.seed, config.validation_fraction,
                           groups=groups)
    except TooFewGroups as error:
        raise too_few_groups(error, config.group_by, groups, task.stratum) from None
    except ValueError as error:  # sklearn: too few images (or groups) of a class to stratify
        raise DataError(f"cannot make the experiment's stratified splits of {config.dataset_dir} "
                        f"({error}); add images, or lower --kfold or the split fractions") from None
    return [RunPlan(f"fold_{i:02d}", config.seed + i, fold) for i, fold in enumerate(folds)]


class SharedWork:
    """What every run of an experiment reuses: the backbone with its pre-trained weights, and
    the frozen features of every image of ``pool`` (on disk, memory-mapped). No image is kept:
    a run that trains stage 2 reads its images again, so memory does not grow with the pool."""

    def __init__(self, config: FinetuneConfig, pool: Split, root: Path):
        with make_distribution(config.strategy).scope():  # the runs' strategy's variables
            self.backbone: Backbone = build_backbone(config)
        self._initial_weights = self.backbone.model.get_weights()
        files = TrainDir(root)
        features, seconds = load_features(files, pool, self.backbone, config.pooling)
        if features is None:
            start = time.perf_counter()
            computed = extract_features(self.backbone, pool.paths, config.batch_size,
                                        config.pooling, progress=config.verbose > 0)
            seconds = time.perf_counter() - start
            save_features(files, pool, self.backbone, config.pooling, computed, seconds)
            del computed
            features, _ = load_features(files, pool, self.backbone, config.pooling)
        self.seconds = {"features": seconds}
        self.features = dict(zip(pool.paths, features))  # rows of the memory-mapped array

    def reset_backbone(self) -> None:
        """Back to the pre-trained weights (stage 2 of the previous run may have changed them)."""
        self.backbone.model.set_weights(self._initial_weights)


def run_experiment(config: FinetuneConfig | None = None, **settings) -> dict:
    """Runs the experiment ``config.num_splits`` / ``config.kfold`` asks for (see the module
    docstring) and returns its summary (what ``summary.json`` holds)."""
    config = config or FinetuneConfig(**settings)
    check_experiment(config)
    if not (config.num_splits or config.kfold):
        raise RunwayError("an experiment needs --num_splits N or --kfold K")
    dataset_dir = dataset_source(config.dataset_dir, config.labels_csv).root
    root = Path(config.train_dir)
    check_resume(root, config)
    configure_device(config.jit_compile, config.mixed_precision, config.seed)
    dataset, task = load_dataset(config, root, TrainDir(root).data_report)
    write_json(TrainDir(root).data_report, dataset.report())
    pool = dataset.pooled()
    plans = plan_runs(config, task, pool.targets, pool.groups)
    random_plans = [dataclasses.replace(plan, name=f"random_{plan.name}") for plan in
                    plan_runs(config, task, pool.targets)] if config.compare_random_split else []
    protocol = (f"{config.num_splits} stratified random splits" if config.num_splits
                else f"stratified {config.kfold}-fold")
    if config.group_by:
        protocol += f", by group (--group_by {config.group_by})"
    if random_plans:
        protocol += ", and the same without groups to compare"
    print(f"{dataset_dir}: {len(pool)} images, {len(dataset.labels)} labels; "
          f"{protocol}", flush=True)
    for line in experiment_notes(config, dataset):
        print(line, flush=True)
    shared: SharedWork | None = None
    rows, random_rows = [], []
    ungrouped = dataset.ungrouped()
    for plan, finished, source in ([(p, rows, dataset) for p in plans]
                                   + [(p, random_rows, ungrouped) for p in random_plans]):
        done = TrainDir(root).experiment_run(plan.name).done
        if done.exists():
            finished.append(read_json(done, fix=f"delete it to run {plan.name} again"))
            print(f"{plan.name}: finished earlier, skipped", flush=True)
            continue
        if shared is None:
            shared = SharedWork(config, pool, root)
            print("shared: " + ", ".join(f"{k} {v:.1f} s" for k, v in shared.seconds.items()),
                  flush=True)
        finished.append(_run(config, task, plan, source, shared, root))
        print(f"{plan.name}: test {task.headline(finished[-1]['test'])}  "
              f"({finished[-1]['run_seconds']:.1f} s)",
              flush=True)
        if finished is rows:
            write_summary(summarise(rows, plans, config, task, shared), root, task, rows)
    summary = summarise(rows, plans, config, task, shared, previous=_read_summary(root))
    if random_plans:
        summary["random_split"] = compare_random(summary, summarise(
            random_rows, random_plans, config, task, shared), task)
    write_summary(summary, root, task, rows)
    return summary


def refit_experiment(config: FinetuneConfig, summary: dict) -> RunResult:
    """The one model an experiment exports (``--export_dir``): the head refit on every labelled
    photo's frozen features with the choices its runs made on their validation splits, combined
    (:func:`~runway_cnn.training.refit.combine_choices`: the median regularisation, the median
    of each per-label threshold), on the pre-trained backbone. Stage 2 is not repeated: where
    runs kept it, the summary's ``refit`` section says in how many."""
    root = Path(config.train_dir)
    dataset, task = load_dataset(config, root, TrainDir(root).data_report)
    pool = dataset.pooled()
    plans = plan_runs(config, task, pool.targets, pool.groups)
    runs = [read_json(TrainDir(root / plan.name).metrics,
                      fix=f"run the experiment again to finish {plan.name}") for plan in plans]
    solved = combine_choices([run["stages"]["stage1"]["solver"] for run in runs])
    task = task_from_config(combine_choices([run["task"] for run in runs]))
    task.prepare(pool.targets)
    shared = SharedWork(config, pool, root)  # the experiment's features, read back
    with make_distribution(config.strategy).scope():
        head = task.build_head(shared.backbone.feature_dim)
    features = np.stack([shared.features[p] for p in pool.paths])
    done = None if solved.get("solver") == "adam" else task.refit_head_convex(
        head, features, pool.targets, solved)
    if done is None:  # no convex solver: Adam for the median of the runs' best epochs
        epochs = int(np.median([best_epoch(TrainDir(root / plan.name).stage("stage1"),
                                           task.monitor, task.monitor_mode)
                                or config.stage1_epochs for plan in plans]))
        head.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=task.loss())
        head.fit(features, pool.targets, batch_size=config.batch_size, epochs=epochs,
                 sample_weight=task.sample_weights(pool.targets), verbose=config.verbose)
        done = {"solver": "adam", "epochs": epochs}
    kept = sum(bool(run["stages"]["stage2"].get("improved_on_stage1")) for run in runs)
    choice = ", ".join(f"{k} {v}" for k, v in done.items() if k in ("C", "alpha", "epochs"))
    record = {"splits": ["all"], "images": len(pool), "images_by_split": {"all": len(pool)},
              "refit": True, "rule": config.refit, "dataset_root": str(dataset.root),
              "what": f"stage 1's head ({done['solver']}, {choice or 'its defaults'}: the median "
                      f"of the {len(runs)} runs' choices) on the frozen backbone",
              "stage2_kept_in": kept, "runs": len(runs)}
    if kept:
        record["why"] = (f"stage 2 was kept in {kept} of {len(runs)} runs; the experiment's "
                         "export does not repeat it: run once without --num_splits / --kfold "
                         "for a fine-tuned export")
    notes = experiment_notes(config, dataset)
    if notes:
        record["notes"] = notes
    summary["refit"] = record
    write_learned_keys(root, pool)
    write_json(TrainDir(root).summary, summary)
    model = classifier(shared.backbone, head, config.pooling)
    return RunResult(root, config.to_dict(), summary, model, task, shared.backbone)


def compare_random(grouped: dict, random: dict, task: Task) -> dict:
    """The random splits' figures beside the grouped ones: their aggregate and, per figure, the
    gap (random mean minus grouped mean: what a random split adds by seeing the groups)."""
    return {"runs": random["runs"], "aggregate": random["aggregate"],
            "gap": {key: random["aggregate"][key]["mean"] - grouped["aggregate"][key]["mean"]
                    for key in summary_figures(task).values()
                    if None not in (random["aggregate"].get(key, {}).get("mean"),
                                    grouped["aggregate"].get(key, {}).get("mean"))}}


def _run(config: FinetuneConfig, task: Task, plan: RunPlan, dataset: ImageDataset,
         shared: SharedWork, root: Path) -> dict:
    run_dir = root / plan.name
    run_config = dataclasses.replace(config, train_dir=str(run_dir), seed=plan.seed,
                                     num_splits=0, kfold=0, compare_random_split=False,
                                     refit="none")
    shared.reset_backbone()
    start = time.perf_counter()
    tuner = FineTuner(run_config, dataset=dataset.resplit(plan.indices), backbone=shared.backbone,
                      features=shared.features)
    metrics = (tuner.finished() or tuner.run()).metrics
    stages = metrics["stages"]
    row = {"run": plan.name, "seed": plan.seed,
           **{f"num_{s}": len(idx) for s, idx in plan.indices.items()},
           **{name: metrics["test"][k] for k, name in summary_figures(task).items()},
           _validation_figure(task): metrics["validation"][task.monitored_figure],
           "stage1_seconds": stages["stage1"].get("seconds", 0.0),
           "stage2_seconds": stages["stage2"].get("seconds", 0.0),
           "run_seconds": time.perf_counter() - start,
           "stage2_improved": stages["stage2"].get("improved_on_stage1"),
           "test": metrics["test"]}
    write_json(TrainDir(run_dir).done, row)
    return row


def _stats(values: list[float | None]) -> dict[str, float | None]:
    """Mean, std, min and max of the runs that have the figure (a regression's R² is None on a
    test split of one value); all None when none has it."""
    a = np.asarray([v for v in values if v is not None], np.float64)
    if not len(a):
        return dict.fromkeys(("mean", "std", "min", "max"))
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max())}


def summarise(rows: list[dict], plans: list[RunPlan], config: FinetuneConfig, task: Task,
              shared: SharedWork | None = None, previous: dict | None = None) -> dict:
    """The experiment's summary: every run's row, and mean / std (sample, ddof=1) / min / max of
    the test figures and wall times over the finished runs."""
    shared_seconds = (dict(shared.seconds) if shared is not None
                      else (previous or {}).get("shared_seconds", {}))
    return {
        "protocol": "random_splits" if config.num_splits else "kfold",
        "dataset_dir": str(dataset_source(config.dataset_dir, config.labels_csv).root),
        "backbone": config.model_name,
        "seed": config.seed, "group_by": config.group_by, "runs_planned": len(plans),
        "runs_finished": len(rows),
        "complete": len(rows) == len(plans), "task": task.config(),
        "figures": list(summary_figures(task).values()),
        "plotted_figures": [task.figure_name(k) for k in task.plotted_figures],
        "monitored_figure": task.monitored_figure,
        "runs": [{k: r[k] for k in (*columns(task), "stage2_improved") if k in r} for r in rows],
        "aggregate": {k: _stats([r.get(k) for r in rows]) for k in aggregated(task)}
        if rows else {},
        "shared_seconds": shared_seconds,
        "total_seconds": float(sum(shared_seconds.values()) + sum(r["run_seconds"] for r in rows)),
        "combined": {},  # what the task adds up over the runs' test splits (write_summary)
        "notes": "figures are of each run's test split; std is the sample standard deviation "
                 "(ddof=1); run_seconds is each run's wall time (its last session's, if it was "
                 "resumed); total_seconds adds the shared decode and feature time once",
    }


def _read_summary(root: Path) -> dict | None:
    path = TrainDir(root).summary
    from runway_cnn.plots import read_summary

    return read_summary(root) if path.exists() else None


def write_summary(summary: dict, root: str | Path, task: Task, rows: list[dict] | None = None
                  ) -> None:
    """``summary.json``, ``summary.csv`` (a row per run, then mean / std / min / max rows), the
    box plot of the figures across runs and what the task adds up over the runs' test splits
    (single-label: the summed confusion matrix and its PNG), into ``root``."""
    from runway_cnn.plots import plot_split_accuracy

    root = Path(root)
    tests = [r["test"] for r in rows or [] if "test" in r]
    if tests:
        summary["combined"] = task.combine(
            tests, root, title=f"test, summed over {summary['runs_finished']} runs")
    write_json(TrainDir(root).summary, summary)
    with TrainDir(root).summary_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns(task), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(summary["runs"])
        for stat in ("mean", "std", "min", "max"):
            writer.writerow({"run": stat, **{k: v[stat]
                                             for k, v in summary["aggregate"].items()}})
    if summary["runs"]:
        plot_split_accuracy(root)


def format_summary(summary: dict) -> str:
    """A few lines for the terminal: mean ± std of the figures, and the wall times."""
    agg = summary["aggregate"]
    lines = [f"{summary['runs_finished']}/{summary['runs_planned']} runs "
             f"({summary['protocol']}), test figures, mean ± std [min, max]:"]
    shown = [k for k in summary["plotted_figures"] or summary["figures"]
             if agg[k]["mean"] is not None]  # not a figure no run has (R² of one value)
    for key in shown:
        s = agg[key]
        lines.append(f"  {key:9s} {s['mean']:.3f} ± {s['std']:.3f}  [{s['min']:.3f}, "
                     f"{s['max']:.3f}]")
    for key in ("stage1_seconds", "stage2_seconds", "run_seconds"):
        lines.append(f"  {key:15s} {agg[key]['mean']:.1f} ± {agg[key]['std']:.1f} s per run")
    compared = summary.get("random_split")
    if compared:
        lines.append(f"  the same protocol on random splits (--compare_random_split), "
                     f"{len(compared['runs'])} runs:")
        for key in [k for k in shown if k in compared["gap"]]:
            s, gap = compared["aggregate"][key], compared["gap"][key]
            lines.append(f"  {key:9s} {s['mean']:.3f} ± {s['std']:.3f}  (random split "
                         f"{'+' if gap >= 0 else '-'}{abs(gap):.3f}"
                         + (": it scores photos of groups it trained on" if gap > 0 else "")
                         + ")")
    shared = ", ".join(f"{k} {v:.1f} s" for k, v in summary["shared_seconds"].items())
    lines.append(f"  shared work once: {shared or 'none'}; total {summary['total_seconds']:.1f} s")
    return "\n".join(lines)
