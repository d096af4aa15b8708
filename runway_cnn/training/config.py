"""The settings of one fine-tuning run. Every field is also a ``python -m runway_cnn.finetune`` flag
of the same name, with the ``help`` text below, so the CLI and the Python API cannot drift apart."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from runway_cnn.errors import CheckpointError, RunwayError
from runway_cnn.export_dir import is_model_name
from runway_cnn.output_checks import check_output_dir
from runway_cnn.paths import absolute_path
from runway_cnn.training.plan import (
    CPU_BUDGET_MINUTES,
    LOW_FRACTION,
    MAX_EPOCHS,
    MIN_FULL_EPOCHS,
)
from runway_cnn.training.refit import REFIT_RULES, REFIT_STAGE2
from runway_cnn.tasks import TASKS, foreign_options, option_defaults, task_options
from runway_cnn.tasks.base import option, problems_line, type_problems

STAGE1_SOLVERS = ("lbfgs", "adam")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
MAX_SEED = 2 ** 32 - 1  # numpy's (and so scikit-learn's) largest seed
WORKER_TIMEOUT = 300.0  # seconds, the default --worker_timeout


def dataset_path(dataset_dir: str) -> str:
    """The folder of ``--dataset_dir``: a registered dataset's, or the path given."""
    from runway_cnn.data.folders import DATASETS

    return str(DATASETS.get(dataset_dir)) if dataset_dir in DATASETS else dataset_dir


EXPORT_FOLDER = "--export_dir / --serving_name"  # the export's own folder, as errors name it


def run_inputs(settings: dict) -> list[tuple[str, str | None]]:
    """What a run of ``settings`` (a config's flags, as ``config.json`` holds them) reads, as
    (flag, path): the dataset folder, the label files and its task's path options."""
    task = TASKS.get(settings.get("task") or "single_label")
    paths = [(f"--{f.name}", settings.get(f.name))
             for f in task.options_class.fields() if f.metadata.get("path")]
    return [("--dataset_dir", dataset_path(settings["dataset_dir"])),
            ("--labels_csv", settings.get("labels_csv")),
            ("--labels_file", settings.get("labels_file")), *paths]


@dataclass(init=False)
class FinetuneConfig:
    dataset_dir: str = option(None, "dataset folder (one sub-folder per class, optionally under "
                                    "train/ validation/ test/) or a registered dataset name",
                              required=True)
    train_dir: str = option(None, "where checkpoints, logs, splits, metrics and plots go "
                                  "(default: runs/<dataset folder name>)")
    export_dir: str = option(None, "base dir of the SavedModel export "
                                   "(default: <train_dir>/export)")
    overwrite: bool = option(False, "write into a --train_dir that holds files no run wrote (it "
                                    "is refused otherwise; a run's own train dir is resumed)")
    serving_name: str = option(None, "model name under export_dir (default: the dataset folder's)")
    model_name: str = option(None, "the backbone and its weights, one spec: a registry name (see "
                                   "--list_backbones); hub:URL_OR_DIR, a TF-Hub image "
                                   "feature-vector handle ([0, 1] inputs); "
                                   "keras:NAME[:WEIGHTS_FILE], a Keras application of the "
                                   "registry with a weights file; or run:TRAIN_OR_EXPORT_DIR, a "
                                   "previous run's backbone, of any task (domain pre-training "
                                   "chains: ImageNet → clothing task → target; its preprocessing "
                                   "is reused, its head dropped) (default: efficientnet_lite0)")
    # deprecated: not in --help; given, one warning line, then the same as --model_name PREFIX:X
    hub_handle: str = option(None, "the same as --model_name hub:HUB_HANDLE (its earlier form)",
                             deprecated=True)
    init_from: str = option(None, "the same as --model_name run:INIT_FROM (its earlier form)",
                            deprecated=True)
    init_from_run: str = option(None, "the same as --model_name run:INIT_FROM_RUN (its earlier "
                                      "form)", deprecated=True)
    weights: str = option("default", "default or imagenet: the backbone's ImageNet weights; none: "
                                     "untrained (Keras applications only); or a weights file "
                                     "(Keras applications: the same as --model_name "
                                     "keras:NAME:FILE) / a TF-Hub handle (TF-Hub entries)")
    task: str = option("single_label", "what to predict: single_label (one class per image: class "
                                       "folders, or a --labels_csv 'label' column), multi_label "
                                       "(a --labels_csv 'labels' column, ';'-separated), "
                                       "attributes (one --labels_csv column per attribute, an "
                                       "empty cell unknown) or regression (a number per image: "
                                       "a --labels_csv 'value' column, or --target_column); each "
                                       "task's own flags are listed under its name")
    labels_csv: str = option(None, "CSV manifest: a 'filename' column (paths relative to "
                                   "--dataset_dir) and the task's label column(s); without it, "
                                   "class folders are the labels")
    labels_file: str = option(None, "text file fixing the label vocabulary and its order, one "
                                    "label a line (default: every label of the data, sorted)")
    pooling: str = option("avg", "how the head pools the backbone's last feature map: avg or max "
                                 "(ML-GCN's global max pooling; needs a backbone with a feature "
                                 "map: Keras applications, EfficientNet-Lite)",
                          choices=("avg", "max"))
    image_size: int = option(None, "input resolution (default: the backbone's)")
    batch_size: int = option(32, "images per training step on each replica (the global batch is "
                                 "this times the replicas of --strategy)")
    stage1_solver: str = option("lbfgs", "stage-1 head training on cached features: lbfgs "
                                         "(scikit-learn's L2-regularised logistic regression, "
                                         "the penalty chosen on validation; deterministic) or "
                                         "adam (--stage1_epochs of Adam at --learning_rate with "
                                         "dropout and label smoothing; always used with "
                                         "--stage1_augment)",
                                choices=STAGE1_SOLVERS)
    stage1_epochs: int = option(40, "epochs of head training on the frozen backbone (adam)")
    stage2_epochs: int = option(None, "epochs of fine-tuning the unfrozen backbone; 0 skips stage "
                                      "2 (default: planned, on every device: the most epochs, up "
                                      f"to {MAX_EPOCHS}, that fit --time_budget, from a measured "
                                      "step time)")
    time_budget: float = option(None, "minutes for the whole run (set-up not counted: building "
                                      "the backbone, caching the decoded images): stage 2 "
                                      "measures its training step, plans its epochs and sizes to "
                                      "end inside the budget (part of one epoch when a whole one "
                                      "does not fit), and stops at the batch after which one more "
                                      "and a validation pass would pass it (default: "
                                      f"{CPU_BUDGET_MINUTES:g} on a CPU, none on a GPU; 0 or "
                                      "inf: none)")
    stage2_sizes: str = option("auto", "stage-2 training image sizes: auto (--image_size; when "
                                       f"the budget fits fewer than {MIN_FULL_EPOCHS} epochs "
                                       f"there, progressive from {LOW_FRACTION:g} of it up to "
                                       "it, the last epoch at it: cheaper epochs, FixRes), "
                                       "full (always --image_size), or comma-separated sizes, "
                                       "one per epoch", number=True)
    refit: str = option("auto", "after validation has chosen (regularisation, whether stage 2 is "
                                "kept, thresholds), refit the exported model with those choices "
                                "on more photos: auto (training + validation, + test when the run "
                                "made the test split itself; a test split you gave, a test/ folder "
                                "or a TFRecord dataset's, is never trained on), train_val, all, or "
                                "none (the model trained on the training split); the reported "
                                "figures stay those of the model trained on the training split, "
                                "the estimate for the export. An experiment's export learns from "
                                "every photo (none: no export)")
    refit_stage2: str = option("head", "after a kept stage 2, what the refit trains: head (a head "
                                       "on the fine-tuned backbone's features, its regularisation "
                                       "chosen on validation, kept if it does as well there as "
                                       "stage 2's: as good as whole in a half to a sixth of "
                                       "its minutes, on clothing-small and the clothing tags; "
                                       "skipped when the --time_budget left cannot hold its "
                                       "feature pass) or whole (stages 1 and 2 again on the "
                                       "refit photos up to stage 2's best epoch; the stage-2 plan "
                                       "keeps time for it, and a refit the --time_budget cannot "
                                       "hold falls back to head)")
    learning_rate: float = option(1e-3, "stage-1 learning rate (Adam); with several replicas "
                                        "(--strategy) both stages' rates are multiplied by their "
                                        "number (the linear scaling rule for the global batch)")
    stage2_learning_rate: float = option(None, "stage-2 peak learning rate after warm-up "
                                               "(default: learning_rate / 5)")
    unfreeze: str = option("all", "what stage 2 trains: 'all' (the whole backbone, BatchNorm "
                                  "statistics frozen: the only stage 2 that beat stage 1 on a "
                                  "CPU, see BENCHMARKS.md), a number of top layers with weights "
                                  "(20 covers EfficientNet-Lite0's last three blocks and its head "
                                  "conv, about three times as fast a step), or comma-separated "
                                  "layer-name prefixes (Slim's --trainable_scopes)", number=True)
    stage1_augment: bool = option(False, "augment in stage 1 (then backbone features cannot be "
                                         "cached and stage 1 runs the whole backbone every step)")
    augment: bool = option(True, "stage-2 augmentation: random resized crop, flip, colour jitter")
    dropout: float = option(0.2, "dropout before the classifier")
    warmup_fraction: float = option(0.1, "share of stage-2 steps spent warming up the learning "
                                         "rate")
    patience: int = option(2, "stage-2 early stopping patience (epochs without validation gain)")
    validation_fraction: float = option(0.1, "validation share when the dataset has no "
                                             "validation/ folder")
    test_fraction: float = option(0.1, "test share when the dataset has no split folders")
    seed: int = option(0, "seed of splits, shuffling, augmentation and initialisation")
    group_by: str = option(None, "photos that must stay in one split (one runway show, shoot or "
                                 "product): 'folder' (the file's folder) or 'folder:N' (its first "
                                 "N folder levels), 'column:NAME' (a --labels_csv column), or a "
                                 "regular expression searched in the file's path relative to "
                                 "--dataset_dir, its first group the key (e.g. "
                                 "'^([^/]+/[A-Za-z]+[0-9]+)_' for brand/Fall24_look_012.jpg); "
                                 "every split, --num_splits and --kfold honour it")
    compare_random_split: bool = option(False, "experiment with --group_by: run the same protocol "
                                               "on random splits too (in random_split_NN/ or "
                                               "random_fold_NN/) and report both figures and "
                                               "their gap in summary.json")
    num_splits: int = option(0, "experiment: N runs on stratified random train/validation/test "
                                "splits of all images (given split folders are pooled), run i "
                                "with seed seed+i, in <train_dir>/split_NN/; writes summary.json "
                                "and summary.csv (0: one ordinary run)")
    kfold: int = option(0, "experiment: stratified K-fold over all images (given split folders "
                           "are pooled); fold i tests on the i-th fold, validation is carved from "
                           "the rest; runs in <train_dir>/fold_NN/ (0: no k-fold)")
    jit_compile: str = option("auto", "XLA: auto (on when a GPU is visible), on or off",
                              choices=("auto", "on", "off"))
    mixed_precision: str = option("auto", "mixed_float16: auto (on when a GPU is visible), on "
                                          "or off", choices=("auto", "on", "off"))
    strategy: str = option("auto", "tf.distribute strategy: auto (mirrored over several visible "
                                   "GPUs, else the one device), one_device, mirrored (every local "
                                   "GPU) or multi_worker (MultiWorkerMirroredStrategy over the "
                                   "cluster in TF_CONFIG; see docs/multi_worker.md)",
                           choices=STRATEGIES)
    worker_timeout: float = option(WORKER_TIMEOUT, "multi_worker: seconds to wait at start-up "
                                                   "for the other workers of TF_CONFIG to answer "
                                                   "before giving up, naming those that did not")
    top_k: int = option(5, "labels returned by the exported serving signature")
    verbose: int = option(1, "Keras progress output: 0 silent, 1 progress bar, 2 one line per "
                             "epoch")
    task_options: dict = field(default_factory=dict, metadata={
        "help": "the task's own options (its flags: --head, --attributes …)", "flag": False})

    def __init__(self, task_options: dict | None = None, **settings):
        """The fields by name, and the task's options (``head="mlgcn"``, ``attributes=...``)
        either in ``task_options`` or as keywords beside the fields, as on the command line."""
        known = {f.name: f for f in dataclasses.fields(self)}
        options = dict(task_options or {})
        for name in [k for k in settings if k not in known]:
            options[name] = settings.pop(name)
        for name, f in known.items():
            if name != "task_options":
                setattr(self, name, settings.get(name, f.default))
        self.task_options = options
        older = {name: settings[name] for name, f in known.items()
                 if f.metadata.get("deprecated") and settings.get(name) is not None}
        self.__post_init__()
        from runway_cnn.backbones.factory import warn_older_flags

        warn_older_flags(older, stacklevel=2)  # once valid: an error alone is one line

    def __post_init__(self):
        """Flag values a run cannot use are one clear error here, not a failure deep inside."""
        problems = type_problems(self, self.fields()) or _value_problems(self)
        if problems:
            raise RunwayError(problems_line(problems))
        if self.time_budget is not None and not math.isfinite(60.0 * self.time_budget):
            self.time_budget = 0.0  # inf (or 1e309) minutes: no budget, as 0 says
        unknown = sorted(k for k in self.task_options if k not in option_defaults())
        if unknown:
            raise RunwayError(f"{', '.join('--' + k for k in unknown)}: no such setting")
        foreign = foreign_options(self.task, self.task_options)
        if foreign:
            own = ", ".join(f"--{f.name}" for f in TASKS.get(self.task).options_class.fields())
            raise RunwayError(f"{', '.join('--' + k for k in foreign)}: not an option of --task "
                              f"{self.task} (its options: {own or 'none'})")
        self.task_options = task_options(self.task, self.task_options).to_dict()
        from runway_cnn.training.plan import parse_sizes

        parse_sizes(self.stage2_sizes)  # a bad --stage2_sizes is one line here
        self._absolute_paths()

    def _absolute_paths(self) -> None:
        """Every path made absolute once, here, so that a run's files (config, metrics, export
        records) name the same places from any working directory; a registered dataset name and a
        TF-Hub URL stay as they are; the backbone's flags become one spec in ``model_name``. The
        default train dir is ``runs/<dataset folder name>``."""
        from runway_cnn.backbones.factory import model_spec
        from runway_cnn.data.folders import DATASETS, dataset_name

        if self.dataset_dir not in DATASETS:
            self.dataset_dir = absolute_path(self.dataset_dir)
        self.train_dir = absolute_path(
            self.train_dir or os.path.join("runs", dataset_name(self.dataset_dir)))
        self.export_dir = self.export_dir and absolute_path(self.export_dir)
        self.labels_csv = self.labels_csv and absolute_path(self.labels_csv)
        self.labels_file = self.labels_file and absolute_path(self.labels_file)
        for f in TASKS.get(self.task).options_class.fields():
            if f.metadata.get("path") and self.task_options.get(f.name):
                self.task_options[f.name] = absolute_path(self.task_options[f.name])
        spec, self.weights = model_spec(self.model_name, self.weights, hub_handle=self.hub_handle,
                                        init_from=self.init_from,
                                        init_from_run=self.init_from_run)
        self.model_name, self.hub_handle, self.init_from, self.init_from_run = \
            str(spec), None, None, None

    def inputs(self) -> list[tuple[str, str | None]]:
        """What a run reads, as (flag, path) (:func:`run_inputs`)."""
        return run_inputs(self.to_dict())

    def check_outputs(self) -> None:
        """The run's output folders (train dir, export base and the export's own folder
        ``<export_dir>/<serving_name>``) by the shared rule (:mod:`runway_cnn.output_checks`):
        not files, writable; the train dir and the export's folder outside the dataset and label
        files (and holding none), which this run and every later one read (``cd photos &&
        finetune --dataset_dir .`` would train on its own outputs). The export base may hold
        the dataset: the export writes only into its own folder (``may_hold``)."""
        from runway_cnn.training.result import export_location

        inputs = self.inputs()
        try:
            check_output_dir(self.train_dir, "--train_dir", inputs)
        except RunwayError as error:
            raise RunwayError(f"{error} (without --train_dir: runs/<dataset name> under the "
                              "current directory)") from None
        check_output_dir(self.export_dir, "--export_dir", inputs, may_hold=True)
        check_output_dir(export_location(self.to_dict(), self.train_dir), EXPORT_FOLDER, inputs)

    def to_dict(self) -> dict:
        """Every setting by its flag's name: the fields and the task's options side by side (as
        ``config.json`` holds them)."""
        settings = dataclasses.asdict(self)
        return {**settings, **settings.pop("task_options")}

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)


def _value_problems(c) -> list[tuple[str, object, str]]:
    """The settings of ``c`` (of the right types) a run cannot use: (name, value, rule)."""
    runs = max(c.num_splits, c.kfold, 1)  # an experiment's run i uses seed + i
    return [(name, getattr(c, name), rule) for name, ok, rule in (
        ("dataset_dir", c.dataset_dir is not None, "is required"),
        ("batch_size", c.batch_size >= 1, "must be at least 1"),
        ("stage1_epochs", c.stage1_epochs >= 1, "must be at least 1"),
        ("stage2_epochs", c.stage2_epochs is None or c.stage2_epochs >= 0,
         "must be 0 or more"),
        ("time_budget", c.time_budget is None or c.time_budget >= 0,
         "must be 0 (no budget) or more minutes"),
        ("refit", c.refit in REFIT_RULES, f"must be one of {', '.join(REFIT_RULES)}"),
        ("refit_stage2", c.refit_stage2 in REFIT_STAGE2,
         f"must be one of {', '.join(REFIT_STAGE2)}"),
        ("learning_rate", c.learning_rate > 0, "must be positive"),
        ("stage2_learning_rate", c.stage2_learning_rate is None
         or c.stage2_learning_rate > 0, "must be positive"),
        ("dropout", 0 <= c.dropout < 1, "must be in [0, 1)"),
        ("warmup_fraction", 0 <= c.warmup_fraction < 1, "must be in [0, 1)"),
        ("image_size", c.image_size is None or c.image_size >= 16,
         "must be at least 16"),
        ("top_k", c.top_k >= 1, "must be at least 1"),
        ("serving_name", c.serving_name is None or is_model_name(c.serving_name),
         "must be a plain folder name (no '/', '..' or leading '.'): TF Serving's model name, "
         "a folder under --export_dir"),
        ("worker_timeout", c.worker_timeout > 0, "must be positive"),
        ("seed", 0 <= c.seed <= MAX_SEED - runs + 1,
         "must be in [0, 2**32 - 1] (numpy's and scikit-learn's seeds)" if runs == 1 else
         f"must be in [0, 2**32 - {runs}]: the {runs} runs of --num_splits / --kfold use "
         f"seeds seed to seed + {runs - 1}, and numpy's seeds end at 2**32 - 1"),
        ("compare_random_split", not c.compare_random_split or bool(
            c.group_by and (c.num_splits or c.kfold)),
         "compares an experiment's grouped splits with random ones: give it with "
         "--group_by and --num_splits or --kfold"),
    ) if not ok]


def check_recorded(settings: dict, path: Path) -> None:
    """A run's recorded settings (its ``config.json``, which may have been edited) checked as
    its flags are: one line naming the file and the setting."""
    recorded = SimpleNamespace(**{f.name: settings.get(f.name, f.default)
                                  for f in dataclasses.fields(FinetuneConfig)})
    problems = type_problems(recorded, FinetuneConfig.fields()) or _value_problems(recorded)
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(f"{name} {value!r}: {rule}"
                                                      for name, value, rule in problems)
                              + "; give it back the value the run was trained with")
