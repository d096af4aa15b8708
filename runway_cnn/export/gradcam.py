"""Grad-CAM (Selvaraju et al., ICCV 2017) inside the export: which parts of the eval crop made
the model give a label.

For the output being explained (a class, a label or an attribute value), its logit (before the
softmax / sigmoid) is differentiated with respect to the backbone's last feature map ``A``
``[h, w, c]``; each channel's weight ``alpha_k`` is the spatial mean of that gradient, and the
map is ``ReLU(sum_k alpha_k A_k)``, upsampled (bilinear) to the eval crop and divided by its
maximum, so it lies in [0, 1] (all zeros where nothing speaks for the label).

Only backbones with a feature map have one (Keras applications, converted EfficientNet-Lite);
a TF-Hub feature-vector module, or an earlier run's export reused with ``run:``, gives
pooled features only, and its export has no ``explain`` signature (:func:`gradcam_refusal`
says why, in one line).
"""
from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from runway_cnn.errors import RunwayError

GlobalPooling = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def logits_from_feature_map(model: keras.Model, backbone) -> tuple[Callable, Callable] | None:
    """The classifier ``model`` (images → backbone pooled → ``head``) split at the backbone's
    last feature map: returns ``(feature_map, to_logits)``, two functions ``images → A`` and
    ``A → logits``, or None when the backbone has no feature map."""
    if backbone.feature_map is None:
        return None
    head = model.get_layer("head")
    pooled = [layer for layer in model.layers if isinstance(layer, keras.Model)
              and layer is not head]
    pool = pooled[0].layers[-1] if len(pooled) == 1 else None
    if not isinstance(pool, GlobalPooling):  # a classifier built another way: no safe split
        raise RunwayError(f"cannot find the pooling between the backbone {backbone.name!r} and "
                          "the head of this model: no Grad-CAM")
    return (lambda images: backbone.feature_map(images, training=False),
            lambda maps: head(pool(maps), training=False))


def gradcam(feature_maps: tf.Tensor, to_logits: Callable, indices: tf.Tensor,
            size: int) -> tf.Tensor:
    """Grad-CAM maps ``[n, m, size, size]`` in [0, 1] of ``feature_maps`` ``[n, h, w, c]`` for
    the logit indices ``[n, m]`` (``-1``: no map, zeros). The backbone is not run again: each of
    the ``m`` columns differentiates only the head."""
    feature_maps = tf.cast(feature_maps, tf.float32)

    def one_column(column: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(feature_maps)
            logits = to_logits(feature_maps)
            # images are independent (inference mode), so the sum's gradient is per image
            score = tf.gather(logits, tf.maximum(column, 0), batch_dims=1)
        grads = tape.gradient(score, feature_maps)
        alpha = tf.reduce_mean(grads, axis=[1, 2])  # [n, c]
        cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", feature_maps, alpha))
        cam = tf.image.resize(cam[..., None], [size, size], method="bilinear")[..., 0]
        cam = tf.nn.relu(cam)  # bilinear weights are positive, this only guards round-off
        peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
        cam = tf.math.divide_no_nan(cam, peak)
        return tf.where((column >= 0)[:, None, None], cam, tf.zeros_like(cam))

    columns = tf.transpose(tf.cast(indices, tf.int32))  # [m, n]
    maps = tf.map_fn(one_column, columns,
                     fn_output_signature=tf.TensorSpec([None, size, size], tf.float32))
    return tf.transpose(maps, [1, 0, 2, 3])


def gradcam_refusal(meta: dict, version_dir) -> str:
    """Why an export has no ``explain`` signature, in one line."""
    backbone = meta.get("backbone", "?")
    if "explain" not in meta.get("signatures", {}):
        return (f"{version_dir} was exported before Grad-CAM existed: export the run again "
                "(python -m runway_cnn.export --train_dir ...) to explain its answers")
    return (f"backbone {backbone!r} gives pooled features only (a TF-Hub feature-vector module "
            "or an earlier run's export): no Grad-CAM")
