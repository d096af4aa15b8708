"""Per-device decisions (XLA, precision, determinism) and the distribution strategy, made once per
run and never forced; and what Keras then actually compiled each stage with."""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # disable_op_determinism is not public

from runway_cnn.backbones.features import batch_predictor
from runway_cnn.errors import RunwayError, first_line
from runway_cnn.train_dir import WORKER_TEMP
from runway_cnn.training.config import STRATEGIES, WORKER_TIMEOUT

TASK_TYPES = ("chief", "worker")  # what MultiWorkerMirroredStrategy trains with


@dataclass(frozen=True)
class DeviceSettings:
    gpu: bool
    jit_compile: bool
    mixed_precision: bool
    deterministic: bool = False  # op determinism on (CPU runs without XLA)
    compiled: dict = field(default_factory=dict, compare=False, repr=False)  # stage → record

    def describe(self) -> str:
        return (f"device: {'GPU' if self.gpu else 'CPU'}, XLA {'on' if self.jit_compile else 'off'}"
                f", {'mixed_float16' if self.mixed_precision else 'float32'}"
                + (", deterministic ops" if self.deterministic else
                   ", not bit-deterministic (XLA)" if self.jit_compile else ""))

    def record(self) -> dict:
        """What ``metrics.json`` says: what was decided from the flags, and what Keras compiled
        each stage with (:func:`note_compiled`)."""
        return {"asked": {"gpu": self.gpu, "jit_compile": self.jit_compile,
                          "mixed_precision": self.mixed_precision,
                          "op_determinism": self.deterministic, "summary": self.describe()},
                "compiled": dict(self.compiled)}


def _decide(flag: str, gpu: bool, what: str) -> bool:
    if flag not in ("auto", "on", "off"):
        raise ValueError(f"--{what} must be auto, on or off, not {flag!r}")
    return gpu if flag == "auto" else flag == "on"


def configure_device(jit_compile: str = "auto", mixed_precision: str = "auto",
                     seed: int | None = None) -> DeviceSettings:
    """Turns XLA and mixed precision on for GPUs only (on this CPU, XLA training steps are ~8×
    slower and bfloat16 ~20 % slower), seeds every RNG, and makes CPU ops deterministic when XLA
    is off. With XLA on, op determinism is turned off, also when an earlier run of the process
    turned it on: Keras silently trains without XLA while it is on, so XLA runs are not
    bit-deterministic."""
    gpu = bool(tf.config.list_physical_devices("GPU"))
    jit = _decide(jit_compile, gpu, "jit_compile")
    mixed = _decide(mixed_precision, gpu, "mixed_precision")
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if jit:
        tf_config.disable_op_determinism()
    elif seed is not None and not gpu:  # cheap on CPU; on GPU it would disable fast kernels
        tf.config.experimental.enable_op_determinism()
    return DeviceSettings(gpu, jit, mixed, tf_config.is_op_determinism_enabled())


@contextlib.contextmanager
def float32_policy() -> Iterator[None]:
    """Keras layers built inside compute in float32, whatever policy the process holds (a
    mixed-precision run leaves ``mixed_float16`` behind); the policy is put back on exit."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# --- what Keras compiled -----------------------------------------------------------------------


def _leaf_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


def _why_keras_refused_xla(model: keras.Model) -> str:
    """Why Keras set ``model.jit_compile`` to False though it was asked for (see Keras'
    ``model_supports_jit``)."""
    if tf_config.is_op_determinism_enabled():
        return "op determinism is on"
    refusing = [layer.name for layer in _leaf_layers(model)
                if not getattr(layer, "supports_jit", True)]
    if refusing:
        return f"layer(s) {', '.join(refusing[:3])} do not support XLA"
    return "Keras does not support XLA here"


def xla_failure(model: keras.Model) -> str | None:
    """Why XLA cannot compile ``model``'s training step (None when it can): a training-mode call
    and its gradients, run in the model's strategy as Keras' train step runs them, are lowered to
    XLA HLO on one zero image, without running anything. An op with no XLA kernel (a TF-Hub
    module's, say) fails here in well under a second instead of in ``fit``."""
    if not model.inputs or len(model.inputs) != 1:
        return None
    spec = model.inputs[0]
    images = tf.zeros([1, *(32 if d is None else d for d in spec.shape[1:])],  # any size: 32
                      spec.dtype)
    strategy = model.distribute_strategy

    def forward_backward(x):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            total = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float32))
                              for o in tf.nest.flatten(outputs)])
        return tape.gradient(total, model.trainable_variables)

    step = tf.function(lambda x: strategy.run(forward_backward, args=(x,)), jit_compile=True,
                       autograph=False)
    try:
        with strategy.scope():
            step.experimental_get_compiler_ir(images)(stage="hlo")
    except Exception as error:  # noqa: BLE001 - any failure to lower: fit would fail the same way
        return first_line(error)[:300]
    return None


def note_compiled(model: keras.Model, device: DeviceSettings, backbone: keras.Model,
                  stage: str | None = None) -> dict:
    """Reads back, right after ``model.compile``, what Keras will train ``model`` with, prints it
    in one line and keeps it in ``device.compiled`` under its ``stage`` (by default stage 2 if
    the model trains backbone weights, else stage 1): XLA as Keras kept it (it turns XLA off
    while op determinism is on; a model XLA cannot compile, :func:`xla_failure`, is switched to
    no XLA here, with the reason, rather than failing in ``fit``), the dtype policy in effect,
    the compute dtypes of the backbone's and the head's layers that hold weights (a TF-Hub
    module computes in float32 under any policy), the output dtype and whether losses are
    scaled."""
    backbone_weights = {id(v) for v in backbone.weights}
    trains_backbone = any(id(v) in backbone_weights for v in model.trainable_weights)
    stage = stage or ("stage2" if trains_backbone else "stage1")
    if not device.jit_compile:
        xla = "off"
    elif not model.jit_compile:
        xla = f"off (asked on; Keras turned it off: {_why_keras_refused_xla(model)})"
    else:
        failure = xla_failure(model)
        if failure is None:
            xla = "on (Keras kept it; the train step compiles to XLA HLO)"
        else:
            model.jit_compile = False
            xla = f"off (asked on; this model does not compile under XLA: {failure})"
    in_backbone = {id(layer) for layer in _leaf_layers(backbone)}
    computing = [layer for layer in _leaf_layers(model) if layer.weights]  # where weights do math
    dtypes = {part: sorted({layer.compute_dtype for layer in computing
                            if (id(layer) in in_backbone) == (part == "backbone")})
              for part in ("backbone", "head")}
    record = {
        "model": model.name, "trains_backbone": trains_backbone,
        "jit_compile": bool(model.jit_compile), "xla": xla,
        "dtype_policy": keras.mixed_precision.global_policy().name,
        "compute_dtypes": {part: found for part, found in dtypes.items() if found},
        "output_dtypes": sorted({str(t.dtype) for t in model.outputs}),
        "loss_scaling": isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer),
    }
    device.compiled[stage] = record
    computes = " and ".join(f"{part} in {'/'.join(found)}"
                            for part, found in record["compute_dtypes"].items())
    name = f"{stage[:-1]} {stage[-1]}" if stage[-1].isdigit() else stage
    print(f"{name} compiled: XLA {xla}; {record['dtype_policy']} policy, "
          f"computing {computes}; {'/'.join(record['output_dtypes'])} outputs", flush=True)
    return record


# --- distribution -------------------------------------------------------------------------------


def is_chief(cluster: dict, task_type: str | None, task_id: int) -> bool:
    """The one rule for which process writes a run's files: the ``chief`` task, or worker 0 when
    the cluster has no chief, or the single process of a run without a cluster."""
    if not task_type:
        return True
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def read_tf_config() -> tuple[dict, str, int]:
    """The cluster, task type and task index of ``TF_CONFIG``; a missing or unusable one is one
    clear :class:`RunwayError`."""
    raw = os.environ.get("TF_CONFIG")
    fix = ("--strategy multi_worker needs TF_CONFIG, e.g. '{\"cluster\": {\"worker\": "
           "[\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}' "
           "(docs/multi_worker.md)")
    if not raw:
        raise RunwayError(f"TF_CONFIG is not set: {fix}")
    try:
        spec = json.loads(raw)
    except ValueError as error:
        raise RunwayError(f"TF_CONFIG is not JSON ({first_line(error)}): {fix}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not any(cluster.get(k) for k in ("chief", "worker")):
        raise RunwayError(f"TF_CONFIG has no 'cluster' with 'worker' (or 'chief') addresses: {fix}")
    others = sorted(set(cluster) - set(TASK_TYPES))
    if others:
        raise RunwayError(
            f"TF_CONFIG's cluster has {', '.join(map(repr, others))} tasks: "
            + ("parameter-server training is not supported; " if "ps" in others else "")
            + f"--strategy multi_worker takes {', '.join(map(repr, TASK_TYPES))} tasks only "
            "(docs/multi_worker.md)")
    if not isinstance(task, dict) or task.get("type") not in cluster \
            or not isinstance(task.get("index"), int) \
            or not 0 <= task["index"] < len(cluster[task["type"]]):
        raise RunwayError(f"TF_CONFIG's 'task' {task!r} names no task of its cluster: {fix}")
    bad = [a for tasks in cluster.values() for a in tasks
           if not isinstance(a, str) or ":" not in a]
    if bad:
        raise RunwayError(f"TF_CONFIG's cluster addresses {bad!r} are not host:port: {fix}")
    return cluster, task["type"], task["index"]


class Distribution:
    """A run's ``tf.distribute`` strategy and this process's part in it: how many replicas
    train in step, the global batch and learning rate that follow, and where this process
    writes (the chief: the given folders; any other worker: a ``workertemp_<index>`` folder
    inside them, deleted when the run ends, TF's pattern for files every worker must write)."""

    def __init__(self, name: str, strategy: tf.distribute.Strategy, cluster: dict | None = None,
                 task_type: str | None = None, task_id: int = 0):
        self.name, self.strategy = name, strategy
        self.task_type, self.task_id = task_type, task_id
        self.is_chief = is_chief(cluster or {}, task_type, task_id)
        self._temporary: list[Path] = []

    @property
    def multi_worker(self) -> bool:
        return self.task_type is not None

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def scope(self):
        return self.strategy.scope()

    def global_batch(self, per_replica: int) -> int:
        return per_replica * self.replicas

    def scaled(self, learning_rate: float) -> float:
        """The linear scaling rule: the learning rate times the number of replicas."""
        return learning_rate * self.replicas

    def work_dir(self, path: str | os.PathLike) -> Path:
        """Where this process writes what belongs in ``path``: ``path`` itself on the chief."""
        path = Path(path)
        if self.is_chief:
            return path
        temporary = path / f"{WORKER_TEMP}{self.task_id}"
        self._temporary.append(temporary)
        return temporary

    def remove_temporary(self) -> None:
        """Deletes a non-chief worker's folders once its run is over (the chief has none)."""
        for path in self._temporary:
            shutil.rmtree(path, ignore_errors=True)
        self._temporary.clear()

    def describe(self) -> str:
        who = (f"{self.task_type} {self.task_id}{' (chief)' if self.is_chief else ''}, "
               if self.multi_worker else "")
        return f"strategy: {self.name}, {who}{self.replicas} replica(s) in sync"

    def record(self, per_replica_batch: int) -> dict:
        """What ``metrics.json`` says about the distribution."""
        return {"strategy": self.name, "replicas": self.replicas,
                "per_replica_batch_size": per_replica_batch,
                "global_batch_size": self.global_batch(per_replica_batch),
                "learning_rate_scale": self.replicas, "task_type": self.task_type,
                "task_index": self.task_id if self.multi_worker else None}


def make_distribution(name: str = "auto", worker_timeout: float = WORKER_TIMEOUT
                      ) -> Distribution:
    """The strategy ``--strategy`` asks for, built once per process (TensorFlow allows one
    multi-worker strategy per process, made before other collective work): ``auto`` is
    ``MirroredStrategy`` over several visible GPUs, else the default strategy on the one device
    (exactly the single-device behaviour); ``one_device`` a ``OneDeviceStrategy``; ``mirrored``
    all local GPUs (or the CPU); ``multi_worker`` a ``MultiWorkerMirroredStrategy`` over the
    cluster in ``TF_CONFIG``, once every other worker answers (:func:`wait_for_workers`, up to
    ``worker_timeout`` seconds)."""
    return _make_distribution(name, worker_timeout if name == "multi_worker" else None)


@functools.lru_cache(maxsize=None)
def _make_distribution(name: str, worker_timeout: float | None) -> Distribution:
    if name not in STRATEGIES:
        raise RunwayError(f"--strategy {name!r}: use one of {', '.join(STRATEGIES)}")
    gpus = tf.config.list_physical_devices("GPU")  # (logical ones would start the runtime)
    if name == "multi_worker":
        cluster, task_type, task_id = read_tf_config()
        wait_for_workers(cluster, task_type, task_id, worker_timeout)
        from runway_cnn.training import keras_multi_worker

        keras_multi_worker.patch_keras()
        ring = tf.distribute.experimental.CommunicationImplementation.RING
        auto = tf.distribute.experimental.CommunicationImplementation.AUTO
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=auto if gpus else ring)  # RING: the collectives that work on CPUs
        return Distribution(name, tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=options), cluster, task_type, task_id)
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return Distribution("mirrored", tf.distribute.MirroredStrategy())
    if name == "one_device":
        device = "/gpu:0" if gpus else "/cpu:0"
        return Distribution(name, tf.distribute.OneDeviceStrategy(device))
    return Distribution("default", tf.distribute.get_strategy())


def wait_for_workers(cluster: dict, task_type: str, task_id: int, timeout: float) -> None:
    """Returns once every other task of ``cluster`` accepts a TCP connection on its address.

    TensorFlow's own start-up blocks in C++ for minutes on a peer that is not there, deaf to
    Ctrl-C and SIGTERM; this wait says whom it waits for, honours both signals (it runs in
    Python, one short step at a time) and ends after ``timeout`` seconds in a one-line
    :class:`RunwayError` naming the tasks that did not answer. Meanwhile this task's own port
    listens (then is freed for TensorFlow), so that peers waiting the same way see it."""
    mine = cluster[task_type][task_id]
    peers = [_Peer(f"{kind} {i}", address) for kind in TASK_TYPES
             for i, address in enumerate(cluster.get(kind) or [])
             if (kind, i) != (task_type, task_id)]
    if not peers:
        return
    print(f"waiting up to {timeout:g} s (--worker_timeout) for the other workers: "
          + ", ".join(f"{p.name} at {p.address}" for p in peers), flush=True)
    own = _listen(mine, f"TF_CONFIG's {task_type} {task_id} ({mine})")
    try:
        deadline = time.monotonic() + timeout
        while True:
            peers = [p for p in peers if not p.answers(deadline)]
            if not peers:
                return
            if time.monotonic() >= deadline:
                missing = "; ".join(f"{p.name} at {p.address} ({p.reason})" for p in peers)
                raise RunwayError(f"no answer within {timeout:g} s from {missing}: check "
                                  "TF_CONFIG and that every worker is running, or raise "
                                  "--worker_timeout")
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))
    finally:
        if own is not None:
            own.close()


def _host_port(address: str) -> tuple[str, int | None]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else None


def _listen(address: str, what: str) -> socket.socket | None:
    """A socket listening on ``address``'s port, all interfaces (as TensorFlow's server will);
    None when it cannot be held for another reason than the port being taken."""
    _, port = _host_port(address)
    if port is None:
        return None
    try:
        return socket.create_server(("", port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise RunwayError(f"{what}: port {port} is in use on this machine") from None
        return None


class _Peer:
    """Another task of the cluster: its host name looked up in a daemon thread (a lookup can
    block for long in C, where no signal reaches Python), then a TCP connect."""

    def __init__(self, name: str, address: str):
        self.name, self.address = name, address
        self.host, self.port = _host_port(address)
        self.reason = "no answer yet"
        self._found: list | None = None
        self._lookup: threading.Thread | None = None

    def _resolve(self) -> None:
        try:
            self._found = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as error:
            self.reason = f"its host name does not resolve: {first_line(error)}"

    def answers(self, deadline: float) -> bool:
        if self._found is None:
            if self._lookup is None or not self._lookup.is_alive():
                self._lookup = threading.Thread(target=self._resolve, daemon=True)
                self._lookup.start()
            self._lookup.join(max(min(0.5, deadline - time.monotonic()), 0.0))
            if self._found is None:
                return False
        for family, kind, proto, _, address in self._found:
            try:
                with socket.socket(family, kind, proto) as connection:
                    connection.settimeout(max(min(1.0, deadline - time.monotonic()), 0.05))
                    connection.connect(address)
                return True
            except OSError as error:
                self.reason = first_line(error)
        return False


def predict_rows(model: keras.Model, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's outputs for every row of ``inputs``, in batches (see :func:`batch_predictor`)."""
    run = batch_predictor(model)
    return np.concatenate([np.asarray(run(inputs[i:i + batch_size]))
                           for i in range(0, len(inputs), batch_size)])
