"""TF-Hub SavedModels as Keras 3 layers (``hub.KerasLayer`` needs tf_keras and cannot be used).

The module is loaded with ``tensorflow_hub.resolve`` + ``tf.saved_model.load``, and its variables
are tracked as Keras weights the way ``keras.layers.TFSMLayer`` does (a ``keras.Variable`` wrapping
the very ``tf.Variable`` the restored functions capture), but under clean names: Keras optimizers
build their slot names from these, and ``conv1_kernel:0`` would break Adam.
"""
from __future__ import annotations

import os
import re

import keras
import tensorflow as tf
from tensorflow.python.saved_model import save_context  # not public: see save_hub_module

from runway_cnn.errors import BackboneError, first_line


def load_saved_model(handle: str):
    """Resolves a tfhub.dev / Kaggle handle or a local path and loads the SavedModel."""
    handle = os.fspath(handle)
    is_url = "://" in handle
    if not is_url and not os.path.isdir(handle):
        raise BackboneError(f"TF-Hub handle {handle!r}: no such directory")
    if not is_url and not (os.path.exists(os.path.join(handle, "saved_model.pb"))
                           or os.path.exists(os.path.join(handle, "saved_model.pbtxt"))):
        raise BackboneError(f"TF-Hub handle {handle!r}: not a SavedModel (no saved_model.pb)")
    try:
        path = handle
        if is_url:  # only a URL needs tensorflow_hub (whose import needs setuptools' pkg_resources)
            import tensorflow_hub as hub
            path = hub.resolve(handle)
        return tf.saved_model.load(path)
    except Exception as error:  # a download failure or a broken SavedModel: one clear line
        raise BackboneError(f"cannot load TF-Hub handle {handle!r}: {first_line(error)}") \
            from error


def clean_variable_name(name: str) -> str:
    """``block1/conv:0`` → ``block1.conv``: a name Keras accepts (no ``/``, no ``:``) that keeps the
    layer boundary readable for unfreeze rules."""
    name = re.sub(r":\d+$", "", name)
    name = name.replace("/", ".")
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name).strip("_.") or "variable"


def _function_variables(fn) -> list:
    concrete = getattr(fn, "concrete_functions", None) or [fn.get_concrete_function()]
    seen, variables = set(), []
    for cf in concrete:
        for v in list(cf.trainable_variables) + list(cf.variables):
            if id(v) not in seen:
                seen.add(id(v))
                variables.append(v)
    return variables


@keras.saving.register_keras_serializable(package="runway_cnn")
class HubModule(keras.layers.Layer):
    """A TF-Hub image feature-vector (or any single-input) SavedModel as a trainable Keras layer.

    Args:
        handle: a tfhub.dev / Kaggle URL or a local SavedModel directory.
        endpoint: ``"__call__"`` for TF-Hub reusable SavedModels (called as
            ``module(images, training=...)``), or the name of a function attribute of the loaded
            object (called as ``fn(images)``), e.g. ``"feature_vector"`` of a runway_cnn export.
        output_key: for modules returning a dict, the key to use (default ``"default"``).
        freeze_batchnorm: call the module with ``training=False`` always, so its BatchNorm keeps
            its moving statistics (the fine-tuning default); with False, Keras' ``training`` flag
            is passed through.
    """

    def __init__(self, handle: str, endpoint: str = "__call__", output_key: str | None = None,
                 freeze_batchnorm: bool = True, **kwargs):
        kwargs.setdefault("dtype", "float32")  # restored functions are traced for float32 inputs
        super().__init__(**kwargs)
        self.handle, self.endpoint = os.fspath(handle), endpoint
        self.output_key, self.freeze_batchnorm = output_key, freeze_batchnorm
        self._module = load_saved_model(self.handle)
        if endpoint == "__call__":
            if not callable(self._module):
                raise BackboneError(f"TF-Hub handle {self.handle!r} is not callable "
                                    "(not a reusable TF2 SavedModel)")
            self._fn = self._module
        elif hasattr(self._module, endpoint):
            self._fn = getattr(self._module, endpoint)
        else:
            raise BackboneError(f"SavedModel {self.handle!r} has no endpoint {endpoint!r}")
        self._track_module_variables()
        self.built = True

    def _track_module_variables(self) -> None:
        if self.endpoint == "__call__" and hasattr(self._module, "variables"):
            variables = list(self._module.variables)
            trainable_ids = {id(v) for v in getattr(self._module, "trainable_variables", [])}
        else:
            variables = _function_variables(self._fn)
            trainable_ids = {id(v) for v in variables if v.trainable}
        used: set[str] = set()
        for v in variables:
            name = base = clean_variable_name(v.name)
            n = 1
            while name in used:
                n += 1
                name = f"{base}_{n}"
            used.add(name)
            wrapped = keras.Variable(initializer=v, trainable=id(v) in trainable_ids,
                                     dtype=v.dtype, shape=v.shape, name=name)
            self._track_variable(wrapped)

    def call(self, images, training=None):
        if self.endpoint != "__call__":
            outputs = self._fn(images)
        else:
            outputs = self._fn(images, training=bool(training) and not self.freeze_batchnorm)
        if isinstance(outputs, dict):
            key = self.output_key or ("default" if "default" in outputs else sorted(outputs)[0])
            outputs = outputs[key]
        return outputs

    def get_config(self):
        return {**super().get_config(), "handle": self.handle, "endpoint": self.endpoint,
                "output_key": self.output_key, "freeze_batchnorm": self.freeze_batchnorm}


class ReusableSavedModel(tf.Module):
    """A Keras model as a TF-Hub reusable SavedModel.

    ``__call__(images, training=False)`` is a ``tf.function`` traced for both values of
    ``training``; ``variables``, ``trainable_variables`` (layer order, stem → head) and
    ``regularization_losses`` are plain tracked lists, as TF-Hub's loaders expect (not
    ``tf.Module``'s computed properties). The Keras model itself is closed over, not tracked, so
    each weight is saved once, as the ``tf.Variable`` named by its Keras path.
    """

    variables: list = []
    trainable_variables: list = []
    regularization_losses: list = []

    def __init__(self, model: keras.Model):
        super().__init__(name=model.name)
        self.variables = [v.value for v in model.variables]
        self.trainable_variables = [v.value for v in model.trainable_variables]
        self.regularization_losses = []

        def call(images, training=False):
            return model(images, training=training)

        self.__call__ = tf.function(call, autograph=False)

    def trace(self) -> None:
        """Traces ``__call__`` for any image size and both ``training`` values."""
        spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
        for training in (False, True):
            self.__call__.get_concrete_function(spec, training=training)


def save_hub_module(model: keras.Model, path: str | os.PathLike) -> None:
    """Saves ``model`` (float32 [0, 1] images → outputs) as a TF2 SavedModel in TF-Hub format."""
    module = ReusableSavedModel(model)
    # traced in a save context, as tf.saved_model.save lists a function's traces: traced outside
    # one, each trace misses the cache there (its variable policy differs) and is made again,
    # which doubles the time a large backbone takes to save
    with save_context.save_context(tf.saved_model.SaveOptions()):
        module.trace()
    tf.saved_model.save(module, os.fspath(path))
