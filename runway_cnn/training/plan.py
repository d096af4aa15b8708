"""Stage 2 planned to fit a time budget: how many epochs, at which training sizes (how deep
to unfreeze is ``--unfreeze``, the whole backbone by default; the plan does not choose it).

A run measures its own training step (a few batches at the smallest size it could train at),
scales it by image area to the other sizes, and picks the most epochs that fit the minutes left
of ``--time_budget``, at the evaluation size. Lower sizes are a way to buy epochs when the budget
is short: when fewer than ``MIN_FULL_EPOCHS`` fit at the evaluation size, sizes grow from about
5/8 of it to it (progressive resizing, fastai-style; FixRes), the last epoch always at the
evaluation size, so the best epoch is chosen on validation at the size the export sees. Whether
full-size or progressive epochs train better is not settled by what was measured (BENCHMARKS.md:
one validation photo apart); full size is the default because it needs no assumption about how
a lower training size transfers to the evaluation size.
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

    def describe(self) -> str:
        if not self.epochs:
            return f"stage 2 skipped: {self.why}"
        what = "whole backbone" if self.unfreeze == "all" else f"--unfreeze {self.unfreeze}"
        sizes = (f"{self.sizes[0]} px" if len(set(self.sizes)) == 1 else
                 " → ".join(str(s) for s in self.sizes) + " px")
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


def forward_seconds(measured: dict, full: int, steps: int) -> float:
    """Seconds of a forward pass over ``steps`` batches at the full size (the features the head
    refit after stage 2 computes): a third of a measured training step each, scaled by area."""
    return steps * measured["seconds_per_step"] * (full / measured["size"]) ** 2 / 3


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
    ladder fits more. Returns ``(epochs, sizes, estimated seconds, why)``; 0 epochs when not
    even one fits."""
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
    if sizes == "auto" and cost((low_size(full),)) <= budget_seconds:
        plan = (low_size(full),)
        return 1, plan, cost(plan), "one epoch at the smallest size fits the budget"
    one = cost(ladder(1) if sizes != "auto" else (low_size(full),))
    return 0, (), 0.0, (f"one epoch needs about {one / 60:.1f} min, the --time_budget leaves "
                        f"{max(budget_seconds, 0) / 60:.1f} min (raise it, or lower "
                        "--image_size)")


class BudgetStop(keras.callbacks.Callback):
    """Ends training after an epoch when the next one would end past ``deadline``
    (``time.monotonic()`` seconds): its steps timed as this epoch's median step, scaled by image
    area, plus this epoch's validation pass (one-off costs — tracing, filling the image cache —
    are left out, so a slow first epoch does not stop a run that has time); notes the epoch."""

    def __init__(self, deadline: float, sizes: Sequence[int]):
        super().__init__()
        self.deadline, self.sizes = deadline, list(sizes)
        self.stopped_after: int | None = None
        self._steps: list[float] = []
        self._validation = 0.0
        self._mark = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._steps, self._validation = [], 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._mark = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self._steps.append(time.monotonic() - self._mark)

    def on_test_begin(self, logs=None):
        self._mark = time.monotonic()

    def on_test_end(self, logs=None):
        self._validation = time.monotonic() - self._mark

    def next_epoch_seconds(self, epoch: int) -> float:
        step = float(np.median(self._steps)) if self._steps else 0.0
        scale = (self.sizes[epoch + 1] / self.sizes[epoch]) ** 2
        return len(self._steps) * step * scale + self._validation

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= len(self.sizes):
            return
        upcoming = self.next_epoch_seconds(epoch)
        if time.monotonic() + upcoming > self.deadline:
            self.model.stop_training = True
            self.stopped_after = epoch + 1
            print(f"stage 2 stopped after epoch {epoch + 1}: the next one (about "
                  f"{math.ceil(upcoming)} s) would pass the --time_budget", flush=True)
