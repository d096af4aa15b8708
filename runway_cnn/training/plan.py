"""Stage 2 planned to fit a time budget: how many epochs, at which training sizes (how deep
to unfreeze is ``--unfreeze``, the whole backbone by default; the plan does not choose it).

A run measures its own training step (a few batches through the training input pipeline, at
the evaluation size or the first given size, once the decoded images are cached), scales it by
image area to the other sizes, and picks the most epochs that fit the minutes left
of ``--time_budget``, at the evaluation size. Lower sizes are a way to buy epochs when the budget
is short: when fewer than ``MIN_FULL_EPOCHS`` fit at the evaluation size, sizes grow from about
5/8 of it to it (progressive resizing, fastai-style; FixRes), the last epoch always at the
evaluation size, so the best epoch is chosen on validation at the size the export sees. Whether
full-size or progressive epochs train better is not settled by what was measured (BENCHMARKS.md:
one validation photo apart); full size is the default because it needs no assumption about how
a lower training size transfers to the evaluation size. With less than one epoch in the budget,
the batches of one that fit are trained at the evaluation size (a single epoch at a lower size
never beat stage 1). :class:`BudgetStop` keeps the plan inside the budget at every batch.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import keras
import numpy as np

from runway_cnn.errors import RunwayError

MAX_EPOCHS = 8  # planned epochs when the budget allows more
MIN_FULL_EPOCHS = 2  # fewer full-size epochs than this in the budget: progressive sizes instead
LOW_FRACTION = 0.625  # the first epoch's size as a share of the evaluation size
SIZE_MULTIPLE = 16
SIZE_MODES = ("auto", "full")
CPU_BUDGET_MINUTES = 10.0  # the default --time_budget on a CPU (none on a GPU)
FINAL_SECONDS = 45.0  # set aside in a budget for the final evaluation and the export
RECENT_STEPS = 5  # the budget stop's step time: the median of this many latest steps
# a budget for less than one epoch trains part of one at the evaluation size when it holds at
# least this share of it (one epoch at a smaller size never beat stage 1), else no stage 2; a
# next epoch is begun (and cut) when this share of it fits
MIN_EPOCH_SHARE = 0.5


def parse_sizes(rule: str) -> str | tuple[int, ...]:
    """``--stage2_sizes``: ``auto``, ``full`` or comma-separated sizes, one per epoch."""
    rule = str(rule).strip().lower()
    if rule in SIZE_MODES:
        return rule
    try:
        sizes = tuple(int(part) for part in rule.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 16:
        raise RunwayError(f"--stage2_sizes {rule!r}: use auto, full or comma-separated image "
                          "sizes of at least 16 px, one per stage-2 epoch (e.g. 160,192,224)")
    return sizes


def check_sizes(sizes: str | tuple[int, ...], full: int, epochs: int | None) -> None:
    """Given ``--stage2_sizes`` a run can follow: one per epoch (no more than
    ``--stage2_epochs``), none above the input size ``full``, the last at it (the size of
    validation and of the export); a one-line error otherwise."""
    if not isinstance(sizes, tuple):
        return
    rule = ",".join(map(str, sizes))
    if epochs is not None and len(sizes) > epochs:
        raise RunwayError(f"--stage2_sizes {rule}: {len(sizes)} sizes for --stage2_epochs "
                          f"{epochs}; give one size per epoch")
    if max(sizes) > full:
        raise RunwayError(f"--stage2_sizes {rule}: {max(sizes)} px is above the input size "
                          f"{full} px (--image_size), the size the export sees")
    if sizes[-1] != full:  # with fewer sizes than epochs the last one repeats
        raise RunwayError(f"--stage2_sizes {rule}: the last epoch must train at the input size "
                          f"{full} px, the size validation chooses at and the export sees")


def low_size(full: int) -> int:
    """The smallest training size of a progressive schedule."""
    return max(SIZE_MULTIPLE, int(round(full * LOW_FRACTION / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def progressive_sizes(full: int, epochs: int) -> tuple[int, ...]:
    """``epochs`` sizes from :func:`low_size` up to ``full`` (one epoch: ``full``)."""
    if epochs <= 1:
        return (full,) * epochs
    low = low_size(full)
    steps = [low + (full - low) * e / (epochs - 1) for e in range(epochs)]
    return tuple(min(full, int(round(s / SIZE_MULTIPLE)) * SIZE_MULTIPLE) for s in steps[:-1]) \
        + (full,)


@dataclass(frozen=True)
class Stage2Plan:
    """What stage 2 will do, and the measurements it was planned from."""

    epochs: int
    sizes: tuple[int, ...]
    unfreeze: str
    budget_seconds: float | None  # the seconds left for stage 2 (None: no budget)
    estimated_seconds: float
    measured: dict = field(default_factory=dict)  # {"size", "seconds_per_step", "trace_seconds"}
    why: str = ""  # how the epochs were chosen
    reserved_seconds: float = 0.0  # set aside for --refit_stage2 whole
    steps: int | None = None  # batches of a part epoch (None: whole epochs)

    def describe(self) -> str:
        if not self.epochs:
            return f"stage 2 skipped: {self.why}"
        what = "whole backbone" if self.unfreeze == "all" else f"--unfreeze {self.unfreeze}"
        sizes = (f"{self.sizes[0]} px" if len(set(self.sizes)) == 1 else
                 " → ".join(str(s) for s in self.sizes) + " px")
        if self.steps:
            sizes += f" ({self.steps} batches)"
        step = (f"; a step {self.measured['seconds_per_step']:.2f} s at "
                f"{self.measured['size']} px (measured)" if self.measured else "")
        budget = ("" if self.budget_seconds is None else
                  f" of the {self.budget_seconds / 60:.1f} min left")
        took = f", about {self.estimated_seconds / 60:.1f} min{budget}" if self.measured else ""
        if self.reserved_seconds:
            took += f", {self.reserved_seconds / 60:.1f} min kept for the refit"
        return (f"stage 2 plan: {what}, {self.epochs} epoch(s) at {sizes}{took} "
                f"({self.why}{step})")

    def record(self) -> dict:
        return {**asdict(self), "sizes": list(self.sizes)}

    @classmethod
    def from_record(cls, record: dict) -> "Stage2Plan":
        return cls(**{**record, "sizes": tuple(record["sizes"])})


def epoch_seconds(size: int, measured_size: int, seconds_per_step: float, steps: int,
                  validation_steps: int, full: int) -> float:
    """An epoch's estimated seconds: its training steps (a step's cost scales with the image
    area) and a validation pass at the full size (a forward pass: about a third of a step)."""
    step = seconds_per_step * (size / measured_size) ** 2
    return steps * step + validation_steps * seconds_per_step * (full / measured_size) ** 2 / 3


def step_seconds(measured: dict, size: int) -> float:
    """A training step's seconds at ``size`` px, from the measured step scaled by image area."""
    return measured["seconds_per_step"] * (size / measured["size"]) ** 2


def forward_seconds(measured: dict, full: int, steps: int) -> float:
    """Seconds of a forward pass over ``steps`` batches at the full size (the features the head
    refit after stage 2 computes): a third of a measured training step each, scaled by area."""
    return steps * step_seconds(measured, full) / 3


def steps_that_fit(budget_seconds: float, measured: dict, full: int,
                   validation_steps: int) -> int:
    """Training batches at the full size that fit ``budget_seconds`` beside the tracing and one
    validation pass (a part epoch; at least 1)."""
    spare = budget_seconds - trace_seconds((full,), measured) - \
        forward_seconds(measured, full, validation_steps)
    return max(1, int(spare / step_seconds(measured, full)))


def trace_seconds(sizes: Sequence[int], measured: dict) -> float:
    """Seconds tracing will add to ``sizes``' epochs: the measured step traced the first size;
    ``fit`` traces a second size once more (after two shapes TensorFlow traces one graph for
    any size) and the validation step once (about half a training step's trace)."""
    return measured["trace_seconds"] * ((len(set(sizes)) > 1) + 0.5)


def measured_cost(measured: dict, full: int, steps: int, validation_steps: int
                  ) -> Callable[[Sequence[int]], float]:
    """Seconds of a list of epoch sizes, from a measured step (:func:`epoch_seconds` for each
    epoch, plus :func:`trace_seconds`)."""
    def cost(sizes: Sequence[int]) -> float:
        return trace_seconds(sizes, measured) + sum(
            epoch_seconds(size, measured["size"], measured["seconds_per_step"], steps,
                          validation_steps, full) for size in sizes)
    return cost


def unmeasured_cost(sizes: Sequence[int]) -> float:
    """The cost of a plan made without measuring (several workers, or given epochs without a
    budget): unknown, counted as 0 (the plan line then gives no estimate)."""
    return 0.0


def choose(*, full: int, sizes: str | tuple[int, ...], epochs: int | None,
           budget_seconds: float | None, cost: Callable[[Sequence[int]], float],
           max_epochs: int = MAX_EPOCHS) -> tuple[int, tuple[int, ...], float, str]:
    """Epochs and sizes: given ``epochs`` (the sizes follow), else the most epochs up to
    ``max_epochs`` whose ``cost`` (seconds of a list of sizes) fits ``budget_seconds``; ``auto``
    sizes are the full size unless fewer than ``MIN_FULL_EPOCHS`` fit there and a progressive
    ladder fits more; with less than one epoch in the budget, part of one at the evaluation size
    when ``MIN_EPOCH_SHARE`` of it fits (the batch-boundary stop ends it). Returns ``(epochs,
    sizes, estimated seconds, why)``; 0 epochs when not even that fits."""
    def ladder(n: int, progressive: bool = False) -> tuple[int, ...]:
        if isinstance(sizes, tuple):
            return tuple(sizes[min(e, len(sizes) - 1)] for e in range(n))
        return progressive_sizes(full, n) if progressive else (full,) * n

    def most(progressive: bool) -> int:
        return next((n for n in range(max_epochs, 0, -1)
                     if cost(ladder(n, progressive)) <= budget_seconds), 0)

    if epochs is None and isinstance(sizes, tuple):
        epochs, given = len(sizes), "--stage2_sizes"
    else:
        given = "--stage2_epochs"
    if epochs is not None:
        plan = ladder(epochs)
        return epochs, plan, cost(plan), given
    if budget_seconds is None:
        plan = ladder(max_epochs)
        return max_epochs, plan, cost(plan), "no time budget"
    n, progressive = most(False), False
    if sizes == "auto" and n < MIN_FULL_EPOCHS:
        n_progressive = most(True)
        if n_progressive > n:
            n, progressive = n_progressive, True
    if n:
        plan = ladder(n, progressive)
        why = "the most that fit the budget" if n < max_epochs else \
            f"the most planned ({max_epochs}); the budget would allow more"
        if progressive:
            why += f"; fewer than {MIN_FULL_EPOCHS} fit at {full} px"
        return n, plan, cost(plan), why
    one = cost(ladder(1))
    if budget_seconds >= MIN_EPOCH_SHARE * one:  # the batch-boundary stop ends it in time
        return 1, ladder(1), budget_seconds, (
            f"part of one epoch at {ladder(1)[0]} px fits the budget (about "
            f"{min(1.0, budget_seconds / one):.0%} of its {duration(one)}): it stops at a "
            "batch boundary")
    return 0, (), 0.0, (f"one epoch needs about {duration(one)}, the --time_budget leaves "
                        f"{duration(max(budget_seconds, 0))} for it after stage 1 and the "
                        f"{duration(FINAL_SECONDS)} kept for the final evaluation and export, "
                        f"less than the {MIN_EPOCH_SHARE:.0%} of an epoch worth training (raise "
                        "it, or lower --image_size)")


def spent_why(budget_seconds: float) -> str:
    """Why stage 2 is skipped, unmeasured, when the budget is spent before it begins."""
    return (f"the --time_budget was spent before stage 2 began ({duration(-budget_seconds)} "
            f"over, keeping {duration(FINAL_SECONDS)} for the final evaluation and export); "
            "raise it to fine-tune the backbone")


def duration(seconds: float) -> str:
    """``seconds`` for a plan line: minutes to one decimal, seconds under a minute."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class BudgetStop(keras.callbacks.Callback):
    """Keeps stage 2 inside ``deadline`` (``time.monotonic()`` seconds) at a batch boundary.

    After each batch, when one more batch and a validation pass would end past the deadline, the
    epoch stops there: the batches that fit are trained, Keras validates the weights they give,
    and the keep rule decides as for any epoch. The step time is the median of the epoch's last
    few steps, so it follows a load that rises after the plan; the first step of an epoch
    (tracing, filling a shuffle buffer) is left out, and after it the epoch stops only when the
    deadline has passed. A validation pass is the plan's estimate
    until one is timed, scaled by how much slower steps have become since.

    The plan follows the step time: after an epoch, the next one (its steps scaled by image
    area) is begun when it fits, begun and cut when at least ``MIN_EPOCH_SHARE`` of it fits,
    else not begun; in the last epoch that runs, when fewer batches fit than are left,
    ``schedule`` (a :class:`~runway_cnn.training.schedule.StepSchedule`) finishes its decay in
    the batches that fit. ``steps`` is an epoch's batches; ``planned_step`` the plan's seconds
    of a step at ``sizes[0]``."""

    def __init__(self, deadline: float, sizes: Sequence[int], steps: int | None = None,
                 validation_seconds: float = 0.0, planned_step: float = 0.0, schedule=None):
        super().__init__()
        self.deadline, self.sizes, self.steps = deadline, list(sizes), steps
        self.schedule = schedule
        self._last = len(self.sizes) <= 1  # the epoch running is the last that will run
        self.stopped_after: int | None = None  # the last epoch begun, when the budget ended it
        self.stopped_at_batch: int | None = None  # its batches done, when it ended mid-epoch
        self._steps: list[float] = []
        self._validation = validation_seconds
        # a step's seconds per pixel when the validation pass took ``_validation``
        self._validation_load = planned_step / self.sizes[0] ** 2 if sizes else 0.0
        self._mark = 0.0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._steps, self._epoch = [], epoch
        self._last = self._last or epoch >= len(self.sizes) - 1

    def on_train_batch_begin(self, batch, logs=None):
        self._mark = time.monotonic()

    def _step(self) -> float:
        """The step time now: the median of the epoch's last ``RECENT_STEPS`` steps after its
        first."""
        recent = self._steps[1:][-RECENT_STEPS:] or self._steps
        return float(np.median(recent)) if recent else 0.0

    def _load(self) -> float:
        """A step's seconds per pixel now (0 before any step)."""
        return self._step() / self.sizes[min(self._epoch, len(self.sizes) - 1)] ** 2

    def validation_seconds(self) -> float:
        """A validation pass's seconds at the load now."""
        if not self._validation_load or not self._steps:
            return self._validation
        return self._validation * max(1.0, self._load() / self._validation_load)

    def on_train_batch_end(self, batch, logs=None):
        self._steps.append(time.monotonic() - self._mark)
        left = (self.steps or 0) - len(self._steps)
        if left <= 0 or len(self._steps) < 2 and time.monotonic() < self.deadline:
            return  # the first step traces; after the last one Keras validates anyway
        step, validation = self._step(), self.validation_seconds()
        # a float until compared: a far deadline over a fast step is beyond any int
        fit = int(min(left, (self.deadline - time.monotonic() - validation) / step)) \
            if step else left
        if self._last and self.schedule is not None and fit < left:
            self.schedule.finish_in(max(fit, 1))  # the rate decays in the batches that fit
        rest = step + validation
        if time.monotonic() + rest > self.deadline:
            self.model.stop_training = True
            self.stopped_after, self.stopped_at_batch = self._epoch + 1, len(self._steps)
            print(f"stage 2 stopped in epoch {self._epoch + 1} after {len(self._steps)} of "
                  f"{self.steps} batches: one more and a validation pass (about "
                  f"{math.ceil(rest)} s) would pass the --time_budget; validating the weights "
                  "it has", flush=True)

    def on_test_begin(self, logs=None):
        self._mark = time.monotonic()

    def on_test_end(self, logs=None):
        self._validation = time.monotonic() - self._mark
        self._validation_load = self._load()

    def next_epoch_seconds(self, epoch: int) -> float:
        scale = (self.sizes[epoch + 1] / self.sizes[epoch]) ** 2
        return (self.steps or len(self._steps)) * self._step() * scale + \
            self.validation_seconds()

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped_at_batch is not None or epoch + 1 >= len(self.sizes):
            return
        upcoming = self.next_epoch_seconds(epoch)
        spare = self.deadline - time.monotonic()
        if upcoming <= spare:
            return
        validation = self.validation_seconds()
        share = (spare - validation) / max(upcoming - validation, 1e-9)
        if share >= MIN_EPOCH_SHARE:  # begun, cut to the batches that fit
            self._last = True
            print(f"stage 2: epoch {epoch + 2} will be cut to the batches that fit the "
                  f"--time_budget (about {share:.0%} of them), its learning rate decaying in "
                  "them", flush=True)
        else:
            self.model.stop_training = True
            self.stopped_after = epoch + 1
            print(f"stage 2 stopped after epoch {epoch + 1}: the next one (about "
                  f"{math.ceil(upcoming)} s) would pass the --time_budget", flush=True)
