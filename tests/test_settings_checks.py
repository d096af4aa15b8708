"""Inputs and settings checked before any work: the time budget's odd values, the answer a task's
``evaluate`` must give, the split checks shared by class folders and CSV manifests, and the
types of every setting of the Python API."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import make_image_folder
from helpers import assert_one_line_error, run_cli
from runway_cnn import FinetuneConfig
from runway_cnn import finetune as finetune_cli
from runway_cnn.errors import RunwayError
from runway_cnn.tasks import Task
from runway_cnn.training import plan as planning
from runway_cnn.training.trainer import FineTuner
from tiny_models import make_tiny_hub_module


class _Model:
    stop_training = False


def _run_batches(stop: planning.BudgetStop, now: list, seconds: list[float]) -> int:
    """Epoch 0's batches of ``seconds`` on the fake clock ``now`` until the stop; how many ran."""
    stop.set_model(_Model())
    stop.on_epoch_begin(0)
    for batch, took in enumerate(seconds):
        stop.on_train_batch_begin(batch)
        now[0] += took
        stop.on_train_batch_end(batch)
        if stop.model.stop_training:
            return batch + 1
    return len(seconds)


# --- 1. the time budget -------------------------------------------------------------------------

@pytest.mark.parametrize("minutes", ["inf", "1e309", "Infinity"])
def test_an_infinite_time_budget_means_no_budget(tmp_path, minutes):
    config = finetune_cli.parse_args(["--dataset_dir", str(tmp_path), "--time_budget", minutes])
    assert config.time_budget == 0.0  # what --time_budget 0 says: none
    assert FinetuneConfig(dataset_dir=str(tmp_path), time_budget=float(minutes)).time_budget == 0


def test_a_far_deadline_over_fast_steps_trains_every_batch(monkeypatch):
    """A budget of 1e306 minutes is finite, but its seconds over a microsecond step are more
    batches than an int holds: the stop compares them as floats."""
    now = [100.0]
    monkeypatch.setattr(planning.time, "monotonic", lambda: now[0])
    stop = planning.BudgetStop(deadline=6e307, sizes=[224], steps=10)
    assert _run_batches(stop, now, [1e-6] * 10) == 10 and stop.stopped_at_batch is None


def test_a_deadline_passed_after_the_first_batch_stops_there(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(planning.time, "monotonic", lambda: now[0])
    stop = planning.BudgetStop(deadline=105.0, sizes=[224], steps=10, validation_seconds=1.0)
    assert _run_batches(stop, now, [10.0] * 10) == 1 and stop.stopped_at_batch == 1


@pytest.mark.parametrize("minutes", ["-inf", "-1e9", "nan"])
def test_a_negative_or_nan_time_budget_is_one_line_naming_the_flag(tmp_path, minutes):
    code, _, stderr = run_cli(finetune_cli.main, ["--dataset_dir", str(tmp_path),
                                                  "--time_budget", minutes])
    assert_one_line_error(code, stderr, "--time_budget", "must be 0 (no budget) or more")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 4-class folder of 8 photos a class and the tiny TF-Hub backbone."""
    root = tmp_path_factory.mktemp("settings")
    return root, make_image_folder(root / "photos", per_class=8, size=(32, 48)), \
        make_tiny_hub_module(root / "hub")


def test_a_spent_budget_skips_given_stage2_epochs_and_says_so(tiny, capsys):
    root, photos, hub = tiny
    tuner = FineTuner(FinetuneConfig(
        dataset_dir=str(photos), train_dir=str(root / "spent"), model_name=f"hub:{hub}",
        image_size=32, batch_size=8, stage2_epochs=2, time_budget=0.001,
        validation_fraction=0.25, test_fraction=0.25, verbose=0))
    stage1 = tuner.stage1()
    stage2 = tuner.stage2(baseline=stage1["validation"]["top1"])
    out = capsys.readouterr().out
    assert stage2["skipped"] and stage2["why"].startswith("the --time_budget was spent")
    assert "stage 2 skipped: the --time_budget was spent" in out
    assert "min left" not in out and "stage 2 stopped" not in out


# --- 2. what a task's evaluate must answer ------------------------------------------------------

class _GuideTask(Task):
    """A task as docs/adding_a_task.md's table has one write ``evaluate``: its own figure only."""

    name = "guide_task"

    def evaluate(self, targets, scores):
        return {"accuracy": float(np.mean(np.argmax(scores, -1) == targets))}


def test_an_evaluate_answer_without_the_monitored_figure_is_one_line_naming_it():
    targets, scores = np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]])
    run = SimpleNamespace(_split=lambda name: SimpleNamespace(targets=targets),
                          predict_probabilities=lambda split: scores,
                          task=_GuideTask(["a", "b"]), train_dir="runs/x")
    with pytest.raises(RunwayError) as error:
        FineTuner.evaluate(run, "validation")  # what the trainer reads after each stage
    message = str(error.value)
    assert "\n" not in message
    for named in ("task guide_task", "_GuideTask.evaluate", "'loss'", "'num_examples'"):
        assert named in message, (named, message)

    class Complete(_GuideTask):
        def evaluate(self, targets, scores):
            return {**super().evaluate(targets, scores), "loss": 0.1, "num_examples": 2}

    run.task = Complete(["a", "b"])
    assert FineTuner.evaluate(run, "validation")["num_examples"] == 2
