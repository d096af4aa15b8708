"""Stage 2's plan: epochs and sizes chosen to fit a time budget, the early stop that keeps a run
inside it, and the per-epoch sizes of the training data (progressive resizing)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import make_image_folder
from runway_cnn.data import pipeline
from runway_cnn.data.preprocessing import Augmentation, PreprocessingSpec
from runway_cnn.errors import RunwayError
from runway_cnn.training import plan as planning


def _cost(per_pixel: float = 1e-3, overhead: float = 5.0):
    """A fake plan cost: seconds growing with each epoch's image area."""
    return lambda sizes: overhead + sum(per_pixel * s * s for s in sizes)


def test_sizes_grow_from_five_eighths_to_the_evaluation_size():
    assert planning.low_size(224) == 144
    assert planning.progressive_sizes(224, 4) == (144, 176, 192, 224)
    assert planning.progressive_sizes(224, 2) == (144, 224)
    assert planning.progressive_sizes(224, 1) == (224,)
    assert planning.progressive_sizes(260, 3)[-1] == 260


def test_the_most_epochs_that_fit_the_budget_are_planned():
    cost = _cost()
    fits_two = cost(planning.progressive_sizes(224, 2)) + 1.0
    epochs, sizes, estimate, why = planning.choose(full=224, sizes="auto", epochs=None,
                                                   budget_seconds=fits_two, cost=cost)
    assert (epochs, sizes) == (2, (144, 224)) and estimate <= fits_two  # one fits at 224 px
    assert why == "the most that fit the budget; fewer than 2 fit at 224 px"
    fits_two_full = cost((224, 224)) + 1.0
    epochs, sizes, _, why = planning.choose(full=224, sizes="auto", epochs=None,
                                            budget_seconds=fits_two_full, cost=cost)
    assert (epochs, sizes) == (2, (224, 224)) and why == "the most that fit the budget"
    epochs, sizes, _, _ = planning.choose(full=224, sizes="full", epochs=None,
                                          budget_seconds=fits_two, cost=cost)
    assert (epochs, sizes) == (1, (224,))  # full-size epochs cost more: one fits
    part = 0.6 * cost((224,))  # less than one epoch at 224 px: part of one, never a 144-px one
    for rule in ("auto", "full"):
        epochs, sizes, estimate, why = planning.choose(full=224, sizes=rule, epochs=None,
                                                       budget_seconds=part, cost=cost)
        assert (epochs, sizes, estimate) == (1, (224,), part)
        assert why.startswith("part of one epoch at 224 px fits the budget (about 60% of its")
        assert why.endswith("it stops at a batch boundary")
    too_little = 0.4 * cost((224,))  # under MIN_EPOCH_SHARE of an epoch: no stage 2
    assert planning.MIN_EPOCH_SHARE == 0.5
    assert planning.choose(full=224, sizes="auto", epochs=None, budget_seconds=too_little,
                           cost=cost)[0] == 0
    epochs, sizes, _, why = planning.choose(full=224, sizes="auto", epochs=None,
                                            budget_seconds=1e9, cost=cost)
    assert epochs == planning.MAX_EPOCHS and "the budget would allow more" in why


def test_no_epoch_fits_a_tiny_budget_and_the_plan_says_what_one_needs():
    epochs, sizes, _, why = planning.choose(full=224, sizes="auto", epochs=None,
                                            budget_seconds=20.0, cost=_cost())
    one = _cost()((224,)) / 60  # an epoch at the evaluation size: smaller ones are not planned
    assert epochs == 0 and sizes == ()
    assert why.startswith(f"one epoch needs about {one * 60:.0f} s, the --time_budget leaves "
                          "20 s for it after stage 1 and the 45 s kept for the final evaluation "
                          "and export, less than the 50% of an epoch worth training")
    plan = planning.Stage2Plan(0, (), "all", 20.0, 0.0, {}, why)
    assert plan.describe() == f"stage 2 skipped: {why}"


def test_given_epochs_or_sizes_are_kept_whatever_the_budget():
    assert planning.choose(full=224, sizes="auto", epochs=3, budget_seconds=1.0,
                           cost=_cost())[:2] == (3, (224, 224, 224))
    assert planning.choose(full=224, sizes=(128, 224), epochs=None, budget_seconds=None,
                           cost=_cost())[:2] == (2, (128, 224))
    assert planning.choose(full=224, sizes="auto", epochs=None, budget_seconds=None,
                           cost=_cost())[0] == planning.MAX_EPOCHS


@pytest.mark.parametrize("rule", ["", "big", "224,x", "8,224"])
def test_bad_sizes_are_one_clear_error(rule):
    with pytest.raises(RunwayError, match="--stage2_sizes"):
        planning.parse_sizes(rule)
    assert planning.parse_sizes("FULL") == "full" and planning.parse_sizes("160, 224") == (160, 224)


def test_given_sizes_must_fit_the_epochs_and_end_at_the_input_size():
    planning.check_sizes((16, 24, 32), 32, None)
    planning.check_sizes((24, 32), 32, 3)  # the last size repeats: 24 → 32 → 32
    planning.check_sizes("auto", 32, 2)
    for sizes, epochs, why in (((32, 48, 64, 80), 2, "4 sizes for --stage2_epochs 2"),
                               ((32, 48, 64, 80), None, "80 px is above the input size 64 px"),
                               ((100000,), None, "100000 px is above the input size 64 px"),
                               ((32, 48), None, "the last epoch must train at the input size 64")):
        with pytest.raises(RunwayError, match=why):
            planning.check_sizes(sizes, 64, epochs)


def test_a_plan_round_trips_through_its_record_and_says_itself_in_one_line():
    plan = planning.Stage2Plan(2, (144, 224), "all", 480.0, 300.0,
                               {"size": 144, "seconds_per_step": 0.9, "trace_seconds": 12.0},
                               "the most that fit the budget")
    assert planning.Stage2Plan.from_record(plan.record()) == plan
    line = plan.describe()
    assert line == ("stage 2 plan: whole backbone, 2 epoch(s) at 144 → 224 px, about 5.0 min of "
                    "the 8.0 min left (the most that fit the budget; a step 0.90 s at 144 px "
                    "(measured))")
    assert "\n" not in line


def test_a_part_epoch_plans_the_batches_that_fit_beside_tracing_and_validation():
    measured = {"size": 112, "seconds_per_step": 0.5, "trace_seconds": 8.0}  # 2 s at 224 px
    # 100 s: 4 s of tracing (the validation step's), 10 validation batches at 2/3 s (6.7 s),
    # and 2-s steps in the 89.3 s left
    assert planning.steps_that_fit(100.0, measured, 224, 10) == 44
    assert planning.steps_that_fit(5.0, measured, 224, 10) == 1
    plan = planning.Stage2Plan(1, (224,), "all", 100.0, 100.0, measured, "part", steps=40)
    assert "1 epoch(s) at 224 px (40 batches)" in plan.describe()
    assert planning.Stage2Plan.from_record(plan.record()) == plan


class _Model:
    stop_training = False


def test_the_budget_stops_training_before_an_epoch_that_would_pass_it(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(planning.time, "monotonic", lambda: now[0])

    def first_epoch(deadline: float, sizes: list[int]) -> planning.BudgetStop:
        """Epoch 0 from t = 100: a 30-s first step (tracing), nine of 5 s, 20 s of validation."""
        stop = planning.BudgetStop(deadline=deadline, sizes=sizes)
        stop.set_model(_Model())
        now[0] = 100.0
        stop.on_epoch_begin(0)
        for seconds in [30.0] + [5.0] * 9:
            stop.on_train_batch_begin(0)
            now[0] += seconds
            stop.on_train_batch_end(0)
        stop.on_test_begin()
        now[0] += 20.0
        stop.on_test_end()
        stop.on_epoch_end(0)  # t = 195
        return stop

    # the next epoch at twice the size: 10 steps of 5 s × 4 + 20 s = 220 s, to t = 415
    stop = first_epoch(deadline=400.0, sizes=[112, 224, 224])
    assert stop.next_epoch_seconds(0) == pytest.approx(220.0)
    assert stop.model.stop_training and stop.stopped_after == 1
    stop = first_epoch(deadline=430.0, sizes=[112, 224, 224])
    assert not stop.model.stop_training and stop.stopped_after is None
    stop = first_epoch(deadline=200.0, sizes=[112])
    assert not stop.model.stop_training  # the last epoch: nothing left to stop


def _batches(stop: planning.BudgetStop, now: list, seconds: list[float]) -> int:
    """Runs epoch 0's batches of ``seconds`` on the fake clock ``now`` until the stop; returns
    how many ran."""
    stop.set_model(_Model())
    stop.on_epoch_begin(0)
    for batch, took in enumerate(seconds):
        stop.on_train_batch_begin(batch)
        now[0] += took
        stop.on_train_batch_end(batch)
        if stop.model.stop_training:
            return batch + 1
    return len(seconds)


def test_the_budget_stops_at_a_batch_boundary_when_the_load_rises(monkeypatch, capsys):
    """A fake clock: 10 batches an epoch from t = 100, the first 30 s (tracing), three of 5 s
    (as planned), then 15 s each (another job took the cores), a validation pass planned at 20 s,
    the deadline at t = 250. The step time follows the load, and the validation pass with it:
    after batch 7 (t = 190) the median step is 15 s, three times the planned one, so one more
    batch and a 60-s validation pass would end at t = 265; the epoch stops there. (With the
    validation pass left at 20 s it would have stopped two batches later, at t = 220, and ended
    at t = 280.)"""
    now = [100.0]
    monkeypatch.setattr(planning.time, "monotonic", lambda: now[0])
    stop = planning.BudgetStop(deadline=250.0, sizes=[224, 224], steps=10,
                               validation_seconds=20.0, planned_step=5.0)
    assert _batches(stop, now, [30.0, 5.0, 5.0, 5.0] + [15.0] * 6) == 7
    assert (stop.stopped_after, stop.stopped_at_batch) == (1, 7) and now[0] == 190.0
    assert stop.validation_seconds() == pytest.approx(60.0)
    assert "stage 2 stopped in epoch 1 after 7 of 10 batches: one more and a validation pass " \
           "(about 75 s)" in capsys.readouterr().out
    stop.on_epoch_end(0)  # the epoch it stopped in: no second stop, no second line
    assert capsys.readouterr().out == ""
    now[0] = 100.0  # at 5 s a step the whole epoch and its validation end at t = 195
    quiet = planning.BudgetStop(deadline=250.0, sizes=[224], steps=10, validation_seconds=20.0,
                                planned_step=5.0)
    assert _batches(quiet, now, [30.0] + [5.0] * 9) == 10
    assert not quiet.model.stop_training and quiet.stopped_at_batch is None


def test_the_budget_stop_trains_every_batch_that_fits(monkeypatch):
    """The deadline at t = 170 falls inside the epoch: batches end at t = 130, 135, …; after the
    5th (t = 150) one more and the 20-s validation pass would end at t = 175, so 5 are trained
    (stopping as soon as the whole epoch cannot fit would have trained 2)."""
    now = [100.0]
    monkeypatch.setattr(planning.time, "monotonic", lambda: now[0])
    stop = planning.BudgetStop(deadline=170.0, sizes=[224], steps=10, validation_seconds=20.0,
                               planned_step=5.0)
    assert _batches(stop, now, [30.0] + [5.0] * 9) == 5 and now[0] == 150.0


def test_training_data_holds_one_epoch_per_size_each_reshuffled(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=5)
    paths = sorted(str(p) for p in folder.rglob("*.jpg"))
    targets = np.arange(len(paths))
    spec = PreprocessingSpec(32)
    ds = pipeline.train_dataset(paths, targets, spec, 8, Augmentation(), seed=3,
                                sizes=[16, 24, 32])
    steps = pipeline.steps_per_epoch(len(paths), 8)
    batches = [(images.shape[1], labels) for images, labels in ds.as_numpy_iterator()]
    assert len(batches) == 3 * steps
    for epoch, size in enumerate([16, 24, 32]):
        part = batches[epoch * steps:(epoch + 1) * steps]
        assert {shape for shape, _ in part} == {size}
        assert sorted(np.concatenate([labels for _, labels in part])) == list(targets)
    orders = [np.concatenate([labels for _, labels in batches[e * steps:(e + 1) * steps]])
              for e in range(3)]
    assert not np.array_equal(orders[0], orders[1])  # each epoch its own shuffle
    again = [labels for _, labels in pipeline.train_dataset(
        paths, targets, spec, 8, Augmentation(), seed=3, sizes=[16, 24, 32]).as_numpy_iterator()]
    assert all(np.array_equal(a, b) for a, (_, b) in zip(again, batches))  # the seed fixes it
