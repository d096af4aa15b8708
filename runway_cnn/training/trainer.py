"""The two-stage fine-tune: scan → split → backbone → stage 1 (frozen) → stage 2 (unfrozen top)
→ evaluate → export. ``fine_tune`` is the whole run; the CLI is a flag layer over it. This
module assembles the model and runs the stages; the result type, the resume checks and the
stages' callbacks have modules of their own."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.backbones.factory import Backbone, backbone_chain, get_backbone
from runway_cnn.backbones.features import batch_predictor, extract_features, predict_rows
from runway_cnn.data import folders as data
from runway_cnn.data import pipeline
from runway_cnn.data.dataset import ImageDataset, Split
from runway_cnn.data.leaks import check_split_leaks, warning_line
from runway_cnn.data.preprocessing import Augmentation
from runway_cnn.data.source import dataset_source
from runway_cnn.errors import RunwayError
from runway_cnn.json_io import read_json, write_json
from runway_cnn.tasks import task_for_run, task_from_config
from runway_cnn.train_dir import StageDir, TrainDir
from runway_cnn.training import plan as planning
from runway_cnn.training import refit as refitting
from runway_cnn.training import schedule
from runway_cnn.training.callbacks import (
    ResumingBackup,
    StageClock,
    best_epoch,
    load_best,
    load_model_weights,
    read_epochs,
    resumed_epoch,
    stage_callbacks,
    validation_bought,
)
from runway_cnn.training.config import FinetuneConfig
from runway_cnn.training.datasets import load_dataset
from runway_cnn.training.device import DeviceSettings, configure_device, note_compiled
from runway_cnn.training.distribution import Distribution, make_distribution
from runway_cnn.training.result import RunResult
from runway_cnn.training.resume import check_resume, check_same_data, mark_done, stage_done


def _sharded(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker of a multi-worker run keeps every ``n``-th element (``AutoShardPolicy.DATA``,
    for image files and TFRecords alike: ``FILE`` would give workers shards of unequal sizes,
    hence unequal step counts, and the pipeline expects every record of a split). No effect on
    one worker."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def classifier(backbone: Backbone, head: keras.Model, pooling: str = "avg") -> keras.Model:
    """images → backbone, pooled (always in inference mode: BatchNorm statistics stay put) →
    head."""
    size = backbone.preprocessing.image_size
    images = keras.Input((size, size, 3), name="images")
    features = backbone.pooled(pooling)(images, training=False)
    return keras.Model(images, head(features), name="classifier")


def any_size_classifier(backbone: Backbone, head: keras.Model, pooling: str = "avg"
                        ) -> keras.Model | None:
    """:func:`classifier` taking images of any size, sharing its weights (stage 2 trains on
    smaller images than it evaluates on); None when the backbone takes one size only."""
    images = keras.Input((None, None, 3), name="images")
    pooled = backbone.pooled(pooling)
    try:
        features = keras.models.clone_model(pooled, input_tensors=images,
                                            clone_function=lambda layer: layer)(images,
                                                                                training=False)
        model = keras.Model(images, head(features), name="classifier_any_size")
        size = planning.low_size(backbone.preprocessing.image_size)
        model(np.zeros((1, size, size, 3), "float32"), training=False)
    except Exception:  # noqa: BLE001 - a Keras application built for one input size
        return None
    return model


def build_backbone(config: FinetuneConfig) -> Backbone:
    """The backbone ``config.model_name`` names (a registry name, ``hub:``, ``keras:`` or
    ``run:`` spec)."""
    return get_backbone(config.model_name, weights=config.weights, image_size=config.image_size)


class FineTuner:
    """One run's state; ``run()`` executes the stages that are not done yet.

    The keyword arguments let several runs share work (``runway_cnn.experiments``); left out,
    the run does everything itself:

    - ``dataset``: an already split :class:`~runway_cnn.data.dataset.ImageDataset` (not scanned).
    - ``backbone``: an already built backbone, with the weights the run should start from.
    - ``features``: image path → the frozen backbone's pooled features under the eval transform;
      stage 1 trains on them, and evaluation runs only the head while the backbone is unchanged.
    """

    def __init__(self, config: FinetuneConfig, *, dataset: ImageDataset | None = None,
                 backbone: Backbone | None = None,
                 features: Mapping[str, np.ndarray] | None = None):
        self.config = config
        begun = time.monotonic()
        self.started = begun  # --time_budget counts from here, less set-up (backbone, cache)
        dataset_source(config.dataset_dir, config.labels_csv)  # a missing dataset fails first
        self.distribution: Distribution = make_distribution(config.strategy,
                                                            config.worker_timeout)
        self.train_dir = self.distribution.work_dir(config.train_dir)  # non-chief: a temp dir
        self.files = TrainDir(self.train_dir)
        check_resume(self.train_dir, config)
        self.device: DeviceSettings = configure_device(config.jit_compile, config.mixed_precision,
                                                       config.seed)
        if dataset is None:
            dataset, self.task = load_dataset(config, self.train_dir,
                                              self.files.data_report)
        else:
            self.task = task_for_run(config.task, dataset.labels, config.to_dict())
        self.dataset = dataset
        # what the export is refit on, checked before any training (a bad --refit: one line)
        self.refit_names, refit_note = refitting.refit_splits(config.refit, dataset)
        if refit_note:
            print(refit_note, flush=True)
        check_same_data(self.dataset, self.train_dir)
        data.write_run_files(self.dataset, self.train_dir)
        print(self.dataset.summary_line(), flush=True)
        self.features = features
        self._training_model: keras.Model | None = None
        self._backbone_changed = False  # stage 2 kept new backbone weights: features are stale
        self.task.prepare(self._split("train").targets)
        building = time.monotonic()
        with self.distribution.scope():  # every variable a replica of the strategy's
            self.backbone = backbone if backbone is not None else build_backbone(config)
            self.head = self.task.build_head(self.backbone.feature_dim)
            self.model = classifier(self.backbone, self.head, config.pooling)
        # converting the ImageNet weights (once per machine) and loading them: not charged
        built = time.monotonic()
        self.started += built - building
        self.seconds = {"data": building - begun, "backbone": built - building}  # where it went
        if config.stage2_epochs != 0 and not stage_done(self.files.stage("stage2")):
            schedule.check_unfreeze(self.backbone.model, config.unfreeze)  # before stage 1
            planning.check_sizes(planning.parse_sizes(config.stage2_sizes),
                                 self.backbone.preprocessing.image_size, config.stage2_epochs)

    # -- stages ------------------------------------------------------------------------------
    def _compile(self, model: keras.Model, learning_rate, stage: str | None = None) -> None:
        with self.distribution.scope():
            model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=self.task.loss(),
                          metrics=self.task.metrics(), jit_compile=self.device.jit_compile)
        note_compiled(model, self.device, self.backbone.model, stage)  # what Keras compiled

    @property
    def global_batch(self) -> int:
        """``--batch_size`` images on each replica, every step."""
        return self.distribution.global_batch(self.config.batch_size)

    @property
    def learning_rates(self) -> dict[str, float]:
        """Both stages' (peak) learning rates, scaled by the number of replicas."""
        c = self.config
        return {"stage1": self.distribution.scaled(c.learning_rate),
                "stage2": self.distribution.scaled(c.stage2_learning_rate or c.learning_rate / 5)}

    def _drops_remainder(self, count: int) -> bool:
        """Several workers split each batch; a last batch of fewer images than replicas would
        leave a worker an empty batch (which some CPU kernels refuse), so it is dropped."""
        return self.distribution.multi_worker and 0 < count % self.global_batch < \
            self.distribution.replicas

    def _monitored(self, figures: dict) -> float:
        """The task's monitored figure (``val_top1`` → ``top1``) of an evaluation."""
        return figures[self.task.monitored_figure]

    def _split(self, name: str) -> Split:
        return self.dataset.splits[name]

    def stage1(self) -> dict:
        """Trains the head on the frozen backbone, on cached features unless stage-1 augmentation
        is on (exact for a frozen backbone, and far cheaper): by default as the task's convex
        problem (logistic regression for single-label), else with Keras and Adam."""
        c, stage_dir = self.config, self.files.stage("stage1")
        done = stage_done(stage_dir)
        if done:
            load_model_weights(self.model, stage_dir.final_weights)
            return done
        stage_dir.path.mkdir(parents=True, exist_ok=True)
        clock = StageClock(stage_dir)
        schedule.freeze(self.backbone.model)
        train, val = self._split("train"), self._split("validation")
        solved = None
        if not c.stage1_augment and c.stage1_solver == "lbfgs":
            solved = self.task.fit_head_convex(self.head, self._features(train), train.targets,
                                               self._features(val), val.targets)
        if solved is None:
            callbacks = stage_callbacks(stage_dir, self.task.monitor, self.task.monitor_mode,
                                        None, None, clock)
            if c.stage1_augment:
                self._compile(self.model, self.learning_rates["stage1"])
                self.model.fit(self._train_ds(train, augment=True), epochs=c.stage1_epochs,
                               shuffle=False, validation_data=self._eval_ds(val),
                               callbacks=callbacks, verbose=c.verbose)
            else:
                self._compile(self.head, self.learning_rates["stage1"])
                self.head.fit(self._features(train), train.targets, batch_size=self.global_batch,
                              sample_weight=self.task.sample_weights(train.targets),
                              epochs=c.stage1_epochs, callbacks=callbacks,
                              validation_data=(self._features(val), val.targets),
                              verbose=c.verbose)
            load_best(self.model if c.stage1_augment else self.head, stage_dir)
        self.model.save_weights(str(stage_dir.final_weights))
        return mark_done(stage_dir, {"seconds": clock.seconds,
                                     "features_cached": not c.stage1_augment,
                                     "solver": solved or {"solver": "adam"},
                                     "validation": self.evaluate("validation"),
                                     "leaks": self.check_leaks()})

    def stage2(self, baseline: float) -> dict:
        """Fine-tunes the unfrozen backbone (BatchNorm statistics frozen) at a warmed-up,
        cosine-decayed learning rate, as planned to fit the time budget (:meth:`plan_stage2`);
        keeps the stage-1 weights unless validation improves on ``baseline``."""
        c, stage_dir = self.config, self.files.stage("stage2")
        if c.stage2_epochs == 0:
            print("stage 2 skipped: --stage2_epochs 0", flush=True)
            return {"skipped": True, "why": "--stage2_epochs 0"}
        done = stage_done(stage_dir)
        if done:
            if not done.get("skipped"):
                load_model_weights(self.model, stage_dir.final_weights)
            self._backbone_changed = bool(done.get("improved_on_stage1"))
            return done
        stage_dir.path.mkdir(parents=True, exist_ok=True)
        train, validation = self._split("train"), self._split("validation")
        images = None if self._budget_spent(stage_dir) else \
            self._fill_image_cache(train, c.augment)  # set-up: not charged
        clock = StageClock(stage_dir)
        unfrozen = schedule.unfreeze(self.backbone.model, c.unfreeze)
        model = self.training_model
        self._compile(model, 0.0)  # the rate is set every step (schedule.StepSchedule)
        plan = self.plan_stage2(model, stage_dir, images)
        print(plan.describe(), flush=True)
        if not plan.epochs:
            schedule.freeze(self.backbone.model)
            return mark_done(stage_dir, {"skipped": True, "why": plan.why,
                                         "plan": plan.record(), "seconds": clock.seconds})
        self._backbone_changed = True
        steps = plan.steps or self._steps_per_epoch(len(train.paths))
        first = resumed_epoch(stage_dir)
        rate = schedule.StepSchedule(schedule.warmup_cosine(
            self.learning_rates["stage2"], steps * plan.epochs, c.warmup_fraction),
            steps * plan.epochs)
        budget = [] if plan.budget_seconds is None else [  # the refit's share stays free
            planning.BudgetStop(self.deadline - plan.reserved_seconds, plan.sizes, steps,
                                *self._planned_validation(plan), schedule=rate)]
        model.fit(self._train_ds(train, augment=c.augment, sizes=plan.sizes[first:],
                                 images=images, first_epoch=first),
                  epochs=plan.epochs, steps_per_epoch=steps, shuffle=False,
                  validation_data=self._eval_ds(validation),
                  callbacks=[*stage_callbacks(stage_dir, self.task.monitor,
                                              self.task.monitor_mode, baseline, c.patience,
                                              clock),
                             rate, *budget],
                  verbose=c.verbose)
        improved = load_best(model, stage_dir)
        if not improved:  # stage 2 never beat stage 1 on validation: keep stage 1's weights
            load_model_weights(self.model, self.files.stage("stage1").final_weights)
        self._backbone_changed = improved
        self.model.save_weights(str(stage_dir.final_weights))
        bought, said = validation_bought(stage_dir, self.task.monitor, self.task.monitor_mode,
                                         baseline, improved)
        print(said, flush=True)
        stopped = budget[0].stopped_after if budget else None
        return mark_done(stage_dir, {"seconds": clock.seconds,
                                     "improved_on_stage1": improved,
                                     "unfrozen_weights": len(unfrozen), "plan": plan.record(),
                                     "stopped_by_budget_after": stopped,
                                     "stopped_by_budget_at_batch":
                                         budget[0].stopped_at_batch if budget else None,
                                     **bought,
                                     "validation": self.evaluate("validation")})

    @property
    def training_model(self) -> keras.Model:
        """The model stage 2 fits: :attr:`model` taking images of any size (progressive
        resizing), or :attr:`model` itself for a backbone of one size; the same weights."""
        if self._training_model is None:
            with self.distribution.scope():
                self._training_model = any_size_classifier(self.backbone, self.head,
                                                           self.config.pooling) or self.model
        return self._training_model

    @property
    def deadline(self) -> float | None:
        """``time.monotonic()`` by which training must end for the run to end inside
        ``--time_budget`` (the evaluation and export after it are set aside); None: no budget."""
        minutes = self.config.time_budget
        if minutes is None and self.config.stage2_epochs is None:  # given epochs: no default
            minutes = None if self.device.gpu else planning.CPU_BUDGET_MINUTES
        if not minutes or self.distribution.multi_worker:
            return None
        return self.started + 60.0 * minutes - planning.FINAL_SECONDS

    def _budget_spent(self, stage_dir: StageDir) -> bool:
        """Whether the time budget was spent before stage 2 was planned (it is then skipped
        without measuring or caching anything, given ``--stage2_epochs`` or not: they end at the
        budget too)."""
        deadline = self.deadline
        return (deadline is not None and deadline <= time.monotonic()
                and not stage_dir.plan.exists())

    def _fill_image_cache(self, split: Split, augment: bool) -> tf.data.Dataset | None:
        """``split``'s decoded training images kept in memory, filled now (when they fit:
        :func:`pipeline.fits_in_memory`); the seconds it takes are set-up, moved out of the
        time budget (``seconds["image_cache"]``)."""
        spec = self.backbone.preprocessing
        if not pipeline.fits_in_memory(len(split), spec):
            return None
        start = time.monotonic()
        images = pipeline.decoded_images(split.paths, spec, Augmentation() if augment else None)
        pipeline.fill(images)
        took = time.monotonic() - start
        self.started += took
        self.seconds["image_cache"] = self.seconds.get("image_cache", 0.0) + took
        return images

    def _planned_validation(self, plan: planning.Stage2Plan) -> tuple[float, float]:
        """The plan's seconds of a validation pass and of a training step at its first size."""
        if not plan.measured:
            return 0.0, 0.0
        return (planning.forward_seconds(plan.measured, self.backbone.preprocessing.image_size,
                                         self._validation_steps),
                planning.step_seconds(plan.measured, plan.sizes[0]))

    @property
    def _validation_steps(self) -> int:
        """Batches of a validation pass."""
        return pipeline.steps_per_epoch(len(self._split("validation")), self.global_batch)

    def _steps_per_epoch(self, count: int) -> int:
        """Training batches an epoch of ``count`` images gives (the last, partial one dropped
        where :meth:`_drops_remainder` says so)."""
        if self._drops_remainder(count):
            return max(1, count // self.global_batch)
        return pipeline.steps_per_epoch(count, self.global_batch)

    def plan_stage2(self, model: keras.Model, stage_dir: StageDir,
                    images: tf.data.Dataset | None = None) -> planning.Stage2Plan:
        """Stage 2's epochs and training sizes (:mod:`runway_cnn.training.plan`): the plan of an
        interrupted stage as it was made; else measured on a few batches of ``model`` through
        the training input pipeline (``images``: its filled cache; compiled: the steps run at
        learning rate 0 and the optimizer is reset after them) and fitted to the time left; a
        budget for less than one epoch plans the batches of one that fit. Several workers plan
        without measuring and without a budget (their clocks could disagree on when to
        stop)."""
        if stage_dir.plan.exists():
            return planning.Stage2Plan.from_record(read_json(
                stage_dir.plan, fix=f"delete {stage_dir.path} to plan stage 2 again"))
        c = self.config
        full = self.backbone.preprocessing.image_size
        sizes = planning.parse_sizes(c.stage2_sizes)
        if sizes != "full" and (model is self.model or self.distribution.multi_worker):
            sizes = "full"  # a backbone of one input size; workers rebatch across epochs
        deadline = self.deadline
        measured, cost = {}, planning.unmeasured_cost
        validation_steps = self._validation_steps
        if self._budget_spent(stage_dir):
            return self._spent_plan(stage_dir, deadline - time.monotonic(), {})
        if (deadline is not None or c.stage2_epochs is None) and \
                not self.distribution.multi_worker:
            # at the size of the first epoch most plans train (a part epoch, full-size epochs),
            # so that ``fit`` reuses the measurement's trace
            measured = self._measure_step(model, sizes[0] if isinstance(sizes, tuple) else full,
                                          images)
            cost = planning.measured_cost(
                measured, full, self._steps_per_epoch(len(self._split("train").paths)),
                validation_steps)
        budget = None if deadline is None else deadline - time.monotonic()
        if budget is not None and budget <= 0:  # the measured steps spent what was left
            return self._spent_plan(stage_dir, budget, measured)
        reserved = 0.0  # --refit_stage2 whole: stage 2 again on the refit photos, its share
        if budget is not None and c.refit_stage2 == "whole" and len(self.refit_names) > 1:
            ratio = len(self._refit_split()) / len(self._split("train"))
            reserved = budget * ratio / (1 + ratio)
            budget -= reserved
        epochs, plan_sizes, estimate, why = planning.choose(
            full=full, sizes=sizes, epochs=c.stage2_epochs, budget_seconds=budget, cost=cost)
        part = None  # less than one epoch fits: the batches of one that do
        if c.stage2_epochs is None and budget is not None and epochs == 1 and \
                cost(plan_sizes) > budget:
            part = planning.steps_that_fit(budget, measured, full, validation_steps)
        plan = planning.Stage2Plan(epochs, plan_sizes, c.unfreeze, budget, estimate, measured,
                                   why, reserved, part)
        write_json(stage_dir.plan, plan.record(), indent=2)
        return plan

    def _spent_plan(self, stage_dir: StageDir, budget: float,
                    measured: dict) -> planning.Stage2Plan:
        """The plan of a stage 2 the time budget has no second left for: skipped, saying so."""
        plan = planning.Stage2Plan(0, (), self.config.unfreeze, budget, 0.0, measured,
                                   planning.spent_why(budget))
        write_json(stage_dir.plan, plan.record(), indent=2)
        return plan

    def _measure_step(self, model: keras.Model, size: int,
                      images: tf.data.Dataset | None = None, steps: int = 3) -> dict:
        """Seconds of one training step at ``size`` px through the training input pipeline
        (augmentation, and decoding where nothing is cached: ``images``), the median of
        ``steps - 1`` after a first, tracing one; at learning rate 0 so that no weight moves; the
        optimizer's state is reset afterwards, so training starts as if nothing ran."""
        train = self._split("train")
        batches = iter(self._train_ds(train, augment=self.config.augment, sizes=[size],
                                      images=images).repeat())
        model.optimizer.learning_rate = 0.0
        seconds = []
        for _ in range(max(2, steps)):
            start = time.perf_counter()
            batch = next(batches)
            model.train_on_batch(*batch)  # a smaller last batch: scaled to a full one
            seconds.append((time.perf_counter() - start) * self.global_batch / len(batch[0]))
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
        for variable in optimizer.variables:
            variable.assign(tf.zeros(variable.shape, variable.dtype))
        step = float(np.median(seconds[1:]))
        return {"size": size, "seconds_per_step": step,
                "trace_seconds": max(0.0, seconds[0] - step)}

    # -- data, evaluation ---------------------------------------------------------------------
    def _train_ds(self, split: Split, augment: bool, sizes: list[int] | None = None,
                  images: tf.data.Dataset | None = None, first_epoch: int = 0):
        """``split``'s training batches (``images``: a filled cache of them to read; a resumed
        stage's from ``first_epoch``, with that epoch's seeds)."""
        spec = self.backbone.preprocessing
        ds = pipeline.train_dataset(split.paths, split.targets, spec, self.global_batch,
                                    Augmentation() if augment else None, seed=self.config.seed,
                                    cache=pipeline.fits_in_memory(len(split), spec),
                                    weights=self.task.sample_weights(split.targets), sizes=sizes,
                                    images=images, first_epoch=first_epoch)
        if self._drops_remainder(len(split.paths)):
            ds = ds.rebatch(self.global_batch, drop_remainder=True)
        return _sharded(ds)

    def _eval_ds(self, split: Split):
        """A split's images for the validation of ``fit`` (with several workers, in batches
        that give every worker at least one image)."""
        batch, replicas = self.global_batch, self.distribution.replicas
        if self.distribution.multi_worker and len(split) < replicas:
            raise RunwayError(f"{len(split)} validation image(s) cannot give each of {replicas} "
                              "replicas one: raise --validation_fraction or use fewer workers")
        while self.distribution.multi_worker and 0 < len(split) % batch < replicas:
            batch += 1  # ends at len(split) at the latest
        spec = self.backbone.preprocessing
        return _sharded(pipeline.eval_dataset(split.paths, split.targets, spec, batch,
                                              cache=pipeline.fits_in_memory(len(split), spec)))

    def _features(self, split: Split) -> np.ndarray:
        """The frozen backbone's features of ``split``: from the ``features`` hook, or computed
        for every image of every split in one pass (evaluation then reuses them)."""
        if self.features is None:
            paths = [p for s in self.dataset.splits.values() for p in s.paths]
            self.features = dict(zip(paths, extract_features(
                self.backbone, paths, self.config.batch_size, self.config.pooling,
                progress=self.config.verbose > 0)))
        return np.stack([self.features[p] for p in split.paths])

    def check_leaks(self) -> dict | None:
        """Near-duplicates of validation / test photos in training, found with the frozen
        features stage 1 computed (None when stage-1 augmentation computed none); prints one
        warning line when they are many."""
        if self.features is None:
            return None
        splits, c = self.dataset.splits, self.config
        targets = np.concatenate([s.targets for s in splits.values()])
        leaks = check_split_leaks({name: self._features(s) for name, s in splits.items()},
                                  {name: s.sources for name, s in splits.items()},
                                  grouped="grouping" in self.dataset.split_settings,
                                  num_labels=len(self.dataset.labels),
                                  split=lambda groups: self.task.split(  # the run's, by group
                                      targets, c.validation_fraction, c.test_fraction, c.seed,
                                      groups=groups))
        line = warning_line(leaks)
        if line:
            print(line, flush=True)
        return leaks

    def predict_probabilities(self, split: Split) -> np.ndarray:
        bs = self.config.batch_size
        if self.features is not None and not self._backbone_changed:
            logits = predict_rows(self.head, self._features(split), bs)
        else:
            logits = pipeline.predict_in_order(batch_predictor(self.model), split.paths,
                                               self.backbone.preprocessing, bs)
        return self.task.probabilities(logits)

    def evaluate(self, split_name: str) -> dict:
        split = self._split(split_name)
        scores = self.predict_probabilities(split)
        if not np.isfinite(scores).all():
            raise RunwayError(f"the model's outputs on the {split_name} split are NaN: training "
                              f"diverged (see {self.train_dir}/stage*/history.csv); lower "
                              "--learning_rate or try another --loss, in a new --train_dir")
        return self.task.checked_evaluate(split.targets, scores)

    # -- refit after selection (training.refit) ----------------------------------------------
    def select(self) -> dict:
        """What validation chose, measured: the task's decision rule fitted on validation
        (thresholds), then the figures of every split but train; kept in ``refit/`` while the
        refit runs, so that a resumed refit does not measure them again (the refit changes the
        model they describe)."""
        path = self.files.stage("refit").selected
        if path.exists():
            selected = read_json(path, fix="delete the run's refit/ folder to refit again")
            self.task = task_from_config(selected["task"])
            return selected["figures"]
        validation = self._split("validation")
        decision = self.task.calibrate(validation.targets, self.predict_probabilities(validation))
        figures = {split: self.evaluate(split) for split in self.dataset.splits
                   if split != "train"}
        figures["decision"] = decision
        if len(self.refit_names) > 1:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {"figures": figures, "task": self.task.config()}, indent=2)
        return figures

    def _refit_split(self) -> Split:
        return refitting.union(self.dataset, self.refit_names)

    def refit(self, stage1: dict, stage2: dict) -> dict:
        """The model to export, refit on :attr:`refit_names` with the choices validation made
        (:mod:`runway_cnn.training.refit`): stage 1's head solved again with its regularisation
        on the frozen features of those photos; after a kept stage 2, a head solved on the
        fine-tuned backbone's features (its regularisation chosen on validation, and kept only
        if it does as well there as stage 2's head), the backbone staying as stage 2 left it, or
        under ``--refit_stage2 whole`` both stages again (:meth:`_refit_whole_model`), each when
        the time budget holds it (:meth:`_stage2_refit`). Returns the ``metrics.json``
        section, whose splits and photos are those the export learned from, refit or not (their
        content keys go to the train dir: :func:`~runway_cnn.training.refit.write_learned_keys`).
        """
        stage_dir = self.files.stage("refit")
        done = stage_done(stage_dir) if len(self.refit_names) > 1 else None
        if done:
            if done.get("refit"):
                load_model_weights(self.model, stage_dir.final_weights)
                self.task = task_from_config(done["task"])  # thresholds of a new head
            record = done
        else:
            start = time.perf_counter()
            record = {**self._refit_model(stage1, stage2, stage_dir),
                      "seconds": time.perf_counter() - start}
        learned = refitting.learned_record(  # (also mends a record an older version wrote)
            self.dataset, self.refit_names if record["refit"] else ("train",), self.config.refit)
        record = {**learned, **record, **learned}
        if not done and len(self.refit_names) > 1:
            mark_done(stage_dir, record)
        if not done or not self.files.learned.exists():
            refitting.write_learned_keys(self.train_dir,
                                         refitting.union(self.dataset, record["splits"]))
        return record

    def _refit_model(self, stage1: dict, stage2: dict, stage_dir: StageDir) -> dict:
        """Refits the model to export (:meth:`refit`), if it does; says how, or why not."""
        if len(self.refit_names) == 1:
            return {"refit": False, "why": "--refit none" if self.config.refit == "none" else
                    "no validation split to add"}
        union = self._refit_split()
        record = {}
        if self._backbone_changed:
            kind, why = self._stage2_refit(union, stage2, stage_dir)
            if why:
                print(why, flush=True)
            if kind == "whole":
                record.update(self._refit_whole_model(union, stage1, stage2, stage_dir))
            elif kind == "head":
                record.update(self._refit_after_stage2(union, stage2))
            else:  # the budget holds neither: the export is stage 2's model
                record.update(refit=False, why=why)
        else:  # under --stage1_augment stage 1 trained through augmented images: so does this
            features = None if self.config.stage1_augment else self._features(union)
            record.update(refit=True, what=self._refit_head(self.head, features, union, stage1,
                                                            "stage 1's head"))
        if record["refit"]:
            self.model.save_weights(str(stage_dir.final_weights))
            record["task"] = self.task.config()
            record["figures"] = ("the validation and test figures are of the model trained on "
                                 f"the {len(self._split('train'))} training photos: the "
                                 "estimate for the export, which learned from more")
            if "test" in self.dataset.splits and "test" not in self.refit_names:
                record["test"] = self.evaluate("test")  # the export itself, on unseen photos
        return record

    def _refit_head(self, head: keras.Model, features: np.ndarray | None, split: Split,
                    stage1: dict, what: str) -> str:
        """Solves ``head`` on ``features`` of ``split`` with stage 1's choice: the task's convex
        solver with the regularisation stage 1 chose, else Adam from a new head for the epochs
        that were best in stage 1 (through the images, augmented, under
        ``--stage1_augment``). Says what it did."""
        solved = stage1.get("solver") or {}
        if features is not None and solved.get("solver") != "adam":
            done = self.task.refit_head_convex(head, features, split.targets, solved)
            if done is not None:
                return f"{what}: {done['solver']} at the regularisation chosen on validation"
        epochs = best_epoch(self.files.stage("stage1"), self.task.monitor,
                            self.task.monitor_mode) or self.config.stage1_epochs
        keras.utils.set_random_seed(self.config.seed)
        with self.distribution.scope():
            fresh = self.task.build_head(self.backbone.feature_dim)
        head.set_weights(fresh.get_weights())
        if features is None:  # --stage1_augment: the frozen backbone under the augmentation
            self._compile(self.model, self.learning_rates["stage1"], "refit")
            self.model.fit(self._train_ds(split, augment=True), epochs=epochs, shuffle=False,
                           verbose=self.config.verbose)
        else:
            self._compile(head, self.learning_rates["stage1"], "refit")
            head.fit(features, split.targets, batch_size=self.global_batch, epochs=epochs,
                     sample_weight=self.task.sample_weights(split.targets),
                     verbose=self.config.verbose)
        return f"{what}: Adam for the {epochs} epoch(s) that were best in stage 1"

    def _stage2_refit(self, union: Split, stage2: dict, stage_dir: StageDir
                      ) -> tuple[str | None, str | None]:
        """What the refit after a kept stage 2 trains: ``--refit_stage2`` (``whole``: stage 2
        again, :meth:`_refit_whole_model`; ``head``: :meth:`_refit_after_stage2`) when the time
        budget holds it, else the cheaper one, else nothing (None: the export is stage 2's
        model), with a line saying why. Estimates: stage 2's seconds per epoch scaled by the
        images; the fine-tuned features' forward pass from stage 2's measured step. Decided
        once, kept in ``refit/plan.json`` for a resumed refit."""
        if stage_dir.plan.exists():
            return read_json(stage_dir.plan, fix="delete the run's refit/ folder to refit "
                                                  "again").get("kind"), None
        epochs = best_epoch(self.files.stage("stage2"), self.task.monitor,
                            self.task.monitor_mode) or 1
        logged = max(1, len(read_epochs(self.files.stage("stage2"))))
        whole = (stage2.get("seconds", 0.0) / logged * epochs
                 * len(union) / max(1, len(self._split("train"))))
        measured = (stage2.get("plan") or {}).get("measured")
        head = 0.0 if not measured else planning.forward_seconds(
            measured, self.backbone.preprocessing.image_size,
            pipeline.steps_per_epoch(len(union), self.global_batch))
        left = None if self.deadline is None else self.deadline - time.monotonic()
        kind, why = self.config.refit_stage2, None
        if kind == "whole" and left is not None and whole > left:
            kind, why = "head", (f"refit: stage 2 again on {len(union)} photos needs about "
                                 f"{whole / 60:.1f} min, the --time_budget leaves "
                                 f"{max(0.0, left) / 60:.1f} min: the head is refit on the "
                                 "fine-tuned backbone's features instead")
        if kind == "head" and left is not None and head > left:
            kind, why = None, (f"refit: the fine-tuned backbone's features of {len(union)} "
                               f"photos need about {head / 60:.1f} min, the --time_budget "
                               f"leaves {max(0.0, left) / 60:.1f} min: the export is stage 2's "
                               "model, trained on the training split")
        stage_dir.path.mkdir(parents=True, exist_ok=True)
        write_json(stage_dir.plan, {"kind": kind, "epochs": epochs, "why": why,
                                    "estimated_seconds": {"whole": whole, "head": head}},
                   indent=2)
        return kind, why

    def _refit_whole_model(self, union: Split, stage1: dict, stage2: dict,
                           stage_dir: StageDir) -> dict:
        """Both stages again on ``union`` with the choices validation made: the backbone back
        at its pre-trained weights (stage 1's final weights hold them), the head solved with
        stage 1's choice on the frozen features, then stage 2's plan (sizes, learning-rate
        schedule) up to the epoch that was best on validation, with no validation to watch."""
        c = self.config
        plan = planning.Stage2Plan.from_record(stage2["plan"])
        epochs = int(read_json(stage_dir.plan, fix="").get("epochs", 1))
        load_model_weights(self.model, self.files.stage("stage1").final_weights)
        self._backbone_changed = False
        schedule.freeze(self.backbone.model)
        what = self._refit_head(self.head, self._features(union), union, stage1,
                                "stage 1's head")
        schedule.unfreeze(self.backbone.model, c.unfreeze)
        model = self.training_model
        self._compile(model, 0.0, "refit")
        steps = self._steps_per_epoch(len(union))
        rate = schedule.warmup_cosine(self.learning_rates["stage2"], steps * plan.epochs,
                                      c.warmup_fraction)
        first = resumed_epoch(stage_dir)
        model.fit(self._train_ds(union, augment=c.augment, sizes=plan.sizes[first:epochs],
                                 first_epoch=first),
                  epochs=epochs, steps_per_epoch=steps, shuffle=False,
                  callbacks=[ResumingBackup(stage_dir), schedule.StepSchedule(rate)],
                  verbose=c.verbose)
        schedule.freeze(self.backbone.model)
        self._backbone_changed = True
        return {"refit": True, "whole_model": True,
                "what": f"{what}, then stage 2 again for the {epochs} epoch(s) that were best "
                        "on validation"}

    def _refit_after_stage2(self, union: Split, stage2: dict) -> dict:
        """After a kept stage 2: a convex head on the fine-tuned backbone's features, its
        regularisation chosen on validation; refit on ``union`` if it does at least as well on
        validation as stage 2's head (the task's decision rule then fitted to its validation
        scores: they are another head's), else the export stays the selected model."""
        features = dict(zip(union.paths, extract_features(
            self.backbone, union.paths, self.config.batch_size, self.config.pooling,
            progress=self.config.verbose > 0, what="the fine-tuned backbone, for the refit")))
        stack = lambda split: np.stack([features[p] for p in split.paths])  # noqa: E731
        train, val = self._split("train"), self._split("validation")
        with self.distribution.scope():
            candidate = self.task.build_head(self.backbone.feature_dim)
        solved = (None if self.config.stage1_solver == "adam" else self.task.fit_head_convex(
            candidate, stack(train), train.targets, stack(val), val.targets))
        if solved is None:
            return {"refit": False, "why": "stage 2 was kept and the head has no convex solver "
                                           "to refit on its features"}
        scores = self.task.probabilities(predict_rows(candidate, stack(val),
                                                      self.config.batch_size))
        figures = self.task.checked_evaluate(val.targets, scores)
        candidate_figure, stage2_figure = self._monitored(figures), \
            self._monitored(stage2["validation"])
        sign = 1.0 if self.task.monitor_mode == "max" else -1.0
        compared = {"candidate_validation": candidate_figure,
                    "stage2_validation": stage2_figure}
        if sign * (candidate_figure - stage2_figure) < 0:
            return {"refit": False, **compared,
                    "why": f"a head on the fine-tuned features scored {self.task.monitor} "
                           f"{candidate_figure:.4f} on validation against stage 2's "
                           f"{stage2_figure:.4f}"}
        decision = self.task.calibrate(val.targets, scores)
        what = self._refit_head(self.head, stack(union), union, {"solver": solved},
                                "a head on stage 2's fine-tuned backbone")
        return {"refit": True, "what": what, **compared, "decision": decision}

    # -- the whole run ------------------------------------------------------------------------
    def finished(self) -> RunResult | None:
        """This run as an earlier process finished it (``metrics.json`` and the final weights
        are there), the weights loaded; None if it is not finished."""
        if not (self.files.metrics.exists() and self.files.weights.exists()):
            return None
        metrics = read_json(self.files.metrics, fix="delete it to evaluate the run again")
        load_model_weights(self.model, self.files.weights)
        if isinstance(metrics.get("task"), dict):  # what training decided (thresholds …)
            self.task = task_from_config(metrics["task"])
        recorded = metrics.get("export_path")
        return RunResult(self.train_dir, self.config.to_dict(), metrics, self.model, self.task,
                         self.backbone, Path(recorded) if recorded else None)

    def run(self) -> RunResult:
        """Runs the stages not done yet, evaluates, writes the final weights, ``metrics.json``
        and the plots (exporting is :func:`runway_cnn.api.fine_tune`'s)."""
        from runway_cnn.plots import plot_training_curves

        print(self.device.describe(), "| backbone:", self.backbone.name, flush=True)
        distribution = {**self.distribution.record(self.config.batch_size),
                        "learning_rates": self.learning_rates}
        print(f"{self.distribution.describe()}: global batch {distribution['global_batch_size']},"
              f" learning rates {', '.join(f'{k} {v:g}' for k, v in self.learning_rates.items())}"
              + ("" if self.distribution.is_chief else f"; writing only to {self.train_dir}, "
                 "deleted at the end (the chief writes the run's files)"), flush=True)
        stage1 = self.stage1()
        stage2 = self.stage2(self._monitored(stage1["validation"]))
        start = time.monotonic()
        metrics = self.select()
        evaluated = time.monotonic() - start
        refit = self.refit(stage1, stage2)
        self.model.save_weights(str(self.files.weights))
        self.seconds.update(stage1=stage1.get("seconds", 0.0),
                            stage2=stage2.get("seconds", 0.0), evaluation=evaluated,
                            refit=refit.get("seconds", 0.0))
        metrics.update({
            "backbone": self.backbone.name, "backbone_source": self.backbone.source,
            "chain": backbone_chain(self.backbone.name, self.backbone.source),
            "task": self.task.config(), "label_counts": self.dataset.label_counts(),
            "stages": {"stage1": stage1, "stage2": stage2}, "refit": refit,
            "leaks": stage1.get("leaks"),
            "grouping": self.dataset.split_settings.get("grouping"),
            "device": self.device.record(), "distribution": distribution, "export_path": None,
            "seconds": self.seconds,
        })
        write_json(self.files.metrics, metrics, indent=2)
        plot_training_curves(self.train_dir)
        return RunResult(self.train_dir, self.config.to_dict(), metrics, self.model, self.task,
                         self.backbone)
