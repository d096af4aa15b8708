"""``--strategy``: the strategy each setting builds on this CPU, the chief rule, TF_CONFIG errors,
resume under a strategy, and a real two-worker ``MultiWorkerMirroredStrategy`` run on loopback
ports (two processes; collective stage-2 training; only the chief writes; equal weights)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from conftest import killed_in_stage2, make_image_folder
from helpers import free_ports
from tiny_models import make_tiny_hub_module

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.errors import RunwayError
from runway_cnn.training.distribution import is_chief, make_distribution, read_tf_config

CLASSES = ("checks", "circles", "hstripes", "vstripes")
TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("distribute")
    dataset = make_image_folder(root / "looks", CLASSES, per_class=20, size=(40, 72))
    return root, dataset, make_tiny_hub_module(root / "hub")


def _settings(workspace, name: str, **overrides) -> dict:
    root, dataset, hub = workspace
    return {"dataset_dir": str(dataset), "train_dir": str(root / name), "model_name": f"hub:{hub}",
            "image_size": 32, "batch_size": 8, "stage2_epochs": 1, "learning_rate": 1e-2,
            "validation_fraction": 0.2, "test_fraction": 0.2, "verbose": 0, **overrides}


def test_auto_and_one_device_on_this_cpu():
    auto = make_distribution("auto")
    assert auto.name == "default" and auto.strategy is tf.distribute.get_strategy()
    one = make_distribution("one_device")
    assert isinstance(one.strategy, tf.distribute.OneDeviceStrategy)
    assert one.strategy.extended.worker_devices == ("/job:localhost/replica:0/task:0/device:CPU:0",)
    for d in (auto, one):
        assert d.replicas == 1 and d.is_chief and not d.multi_worker
        assert d.global_batch(8) == 8 and d.scaled(0.01) == 0.01
    assert make_distribution("one_device") is one  # built once per process


@pytest.mark.parametrize("cluster, task_type, index, chief", [
    ({}, None, 0, True),
    ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
    ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
    ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
])
def test_the_chief_rule(cluster, task_type, index, chief):
    assert is_chief(cluster, task_type, index) is chief


@pytest.mark.parametrize("value, message", [
    (None, "TF_CONFIG is not set"),
    ("{not json", "TF_CONFIG is not JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "no 'cluster'"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
     "names no task"),
    ('{"cluster": {"worker": ["nohostport"]}, "task": {"type": "worker", "index": 0}}',
     "not host:port"),
])
def test_a_bad_tf_config_is_one_clear_error(monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(RunwayError, match=message):
        read_tf_config()


def test_cli_multi_worker_without_tf_config_is_one_line(tmp_path, workspace):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    out = subprocess.run([sys.executable, "-m", "runway_cnn.finetune", "--dataset_dir",
                          str(workspace[1]), "--train_dir", str(tmp_path / "t"),
                          "--strategy", "multi_worker"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "TF_CONFIG is not set" in errors[0]


def test_stage2_resumes_under_a_strategy(workspace, monkeypatch):
    config = FinetuneConfig(**_settings(workspace, "resume", stage2_epochs=3, patience=0,
                                        strategy="one_device"))
    killed_in_stage2(lambda: fine_tune(config), monkeypatch)
    result = fine_tune(config)
    assert isinstance(result.model.distribute_strategy, tf.distribute.OneDeviceStrategy)
    epochs = [int(line.split(",")[0]) for line in
              (result.train_dir / "stage2" / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2]  # epochs 0-1 before the interruption, 2 after it
    assert result.metrics["distribution"]["strategy"] == "one_device"


# --- two workers --------------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    from runway_cnn import FinetuneConfig, fine_tune
    from runway_cnn.training import trainer

    out, index, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

    class Weights(keras.callbacks.Callback):
        # the model's weights as stage 2's collective training starts and ends, on this worker
        def on_train_begin(self, logs=None):
            np.savez(f"{out}/before_{index}.npz", *self.model.get_weights())

        def on_train_end(self, logs=None):
            np.savez(f"{out}/after_{index}.npz", *self.model.get_weights())

    original = trainer.stage_callbacks

    def recording(stage_dir, *args):
        callbacks = original(stage_dir, *args)
        return callbacks + [Weights()] if stage_dir.name == "stage2" else callbacks

    trainer.stage_callbacks = recording
    result = fine_tune(FinetuneConfig(**settings))
    print("RESULT " + json.dumps({"train_dir": str(result.train_dir),
                                  "distribution": result.metrics["distribution"]}))
""")


def run_workers(settings: dict, out_dir, count: int = 2, timeout: float = 600
                ) -> list[subprocess.CompletedProcess]:
    """``count`` worker processes of one MultiWorkerMirroredStrategy run on loopback ports,
    all killed if any fails to finish in ``timeout`` seconds."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(count)]}
    procs = []
    try:
        for index in range(count):
            env = {**os.environ, "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}),
                "PYTHONPATH": os.pathsep.join(p for p in (os.path.dirname(TESTS),
                                                          os.environ.get("PYTHONPATH")) if p)}
            procs.append(subprocess.Popen(
                [sys.executable, "-c", WORKER, str(out_dir), str(index),
                 json.dumps({**settings, "strategy": "multi_worker"})],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        finished = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            finished.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout,
                                                        stderr))
        return finished
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _result(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line.removeprefix("RESULT "))


def _load(path) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def test_two_workers_train_in_step_and_only_the_chief_writes(workspace, tmp_path):
    settings = _settings(workspace, "two_workers", stage2_learning_rate=5e-3)
    chief, other = (_result(done) for done in run_workers(settings, tmp_path))
    train_dir = workspace[0] / "two_workers"
    assert chief["train_dir"] == str(train_dir)
    assert other["train_dir"] == str(train_dir / "workertemp_1")
    # the run's files once, from the chief; the other worker's temporary folder is gone
    assert not (train_dir / "workertemp_1").exists()
    assert sorted(p.name for p in (train_dir / "export" / "looks").iterdir()) == ["1"]
    metrics = json.loads((train_dir / "metrics.json").read_text())
    assert metrics["export_path"] == str(train_dir / "export" / "looks" / "1")
    history = (train_dir / "stage2" / "history.csv").read_text().splitlines()
    assert len(history) == 2  # one epoch of stage 2 was trained (and logged once)
    # two replicas: the global batch is 2 × 8 and both stages' learning rates are doubled
    recorded = metrics["distribution"]
    assert recorded == chief["distribution"]
    assert (recorded["replicas"], recorded["global_batch_size"]) == (2, 16)
    assert recorded["learning_rates"] == {"stage1": pytest.approx(2e-2),
                                          "stage2": pytest.approx(1e-2)}
    assert other["distribution"]["task_index"] == 1 and recorded["task_index"] == 0
    # collective training: both workers start from the same weights, both change them, and
    # they end with the same weights
    before = [_load(tmp_path / f"before_{i}.npz") for i in (0, 1)]
    after = [_load(tmp_path / f"after_{i}.npz") for i in (0, 1)]
    for a, b in zip(*before):
        np.testing.assert_array_equal(a, b)
    moved = [not np.allclose(a, b, atol=1e-5) for a, b in zip(before[0], after[0])]
    assert sum(moved) >= 4, "stage 2 did not change the weights"
    for a, b in zip(*after):
        np.testing.assert_array_equal(a, b)
