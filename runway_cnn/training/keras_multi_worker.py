"""Two fixes that let Keras 3's ``Model.fit`` run under
``tf.distribute.MultiWorkerMirroredStrategy`` (Keras 3.15 with TensorFlow 2.21;
keras-team/keras#20585, still open): applied only when a run asks for ``--strategy multi_worker``,
once per process.

1. ``fit`` first reads one batch to build the model symbolically and averages it over the workers
   with ``strategy.reduce(MEAN, batch, axis=None)`` on the whole ``(images, labels)`` tuple, which
   multi-worker collectives cannot convert ("Attempt to convert a value (PerReplica...)"). Only
   the batch's shapes are needed, so this worker's own replica of it is used (no collective).
2. Every step's logs (loss, metrics) are averaged across workers with
   ``strategy.reduce(MEAN, value, axis=0)``, which fails on the scalars they are ("Invalid
   reduction dimension 0 for input with 0 dimensions"). ``axis=None`` (the element-wise mean over
   replicas, what Keras does for one worker) is used instead; every worker then logs the same
   figures, so early stopping and best-checkpoint decisions agree on all of them.

Gradients were never affected: Keras' optimizer all-reduces them itself.
"""
from __future__ import annotations

import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tf_trainer

_original_reduce = tf_trainer.reduce_per_replica


def _reduce_per_replica(values, strategy, reduction="auto"):
    if tf_trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
        return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
    return _original_reduce(values, strategy, reduction)


def _local_replica(value):
    if isinstance(value, tf.distribute.DistributedValues):
        return value.values[0]
    return value


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    if self._distribute_strategy is None:
        return
    if iterator is not None:
        for _, _, batches in iterator:
            data_batch = tree.map_structure(_local_replica, next(batches))
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def patch_keras() -> None:
    """Applies both fixes (idempotent)."""
    tf_trainer.reduce_per_replica = _reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
