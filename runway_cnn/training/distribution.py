"""The distribution strategy of a run (``--strategy``) and this process's part in it: which
process is the chief, ``TF_CONFIG`` read with one-line errors, the workers' wait for each other
and a non-chief worker's temporary folders."""
from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import tensorflow as tf

from runway_cnn.errors import RunwayError, first_line
from runway_cnn.train_dir import WORKER_TEMP
from runway_cnn.training.config import STRATEGIES, WORKER_TIMEOUT

TASK_TYPES = ("chief", "worker")  # what MultiWorkerMirroredStrategy trains with


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
