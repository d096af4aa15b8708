"""Per-device decisions (XLA, precision, determinism), made once per run and never forced, and
what Keras then actually compiled each stage with."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # disable_op_determinism is not public

from runway_cnn.errors import first_line


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
