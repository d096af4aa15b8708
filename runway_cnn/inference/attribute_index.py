"""Recommendations from predicted attributes (seed 004): a catalog's attribute-probability
vectors, a 2-D attribute map of them, and the catalog items nearest to a photo.

:func:`build_attribute_index` runs an export over a catalog folder, keeps each item's score
vector (every attribute's probabilities side by side) and its result, fits a small Keras
autoencoder from the vectors to 2-D (the seed's map) and PCA beside it (both scored by
reconstruction error and scikit-learn's trustworthiness of the map's neighbourhoods), and writes
the index folder:
``index.json`` (model, labels, items, skipped files, map figures), ``index.npz`` (the vectors,
both maps, the encoder's weights; arrays only, read without pickle) and ``map.png``.
:func:`query_attribute_index` returns the nearest items to photos in attribute space, optionally
on some attributes only. Any export works; the attribute task's groups are its attributes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from runway_cnn.errors import DataError, RunwayError, first_line
from runway_cnn.inference.batch import list_images, predict
from runway_cnn.inference.predictor import Predictor
from runway_cnn.json_io import read_json, write_json
from runway_cnn.output_checks import (
    check_output_dir,
    check_output_file,
    check_own_output,
    record_written,
)
from runway_cnn.tasks.base import checked_arguments

INDEX_JSON, INDEX_ARRAYS, MAP_PNG = "index.json", "index.npz", "map.png"
FORMAT = "runway_cnn attribute index"
OWN_FILES = (INDEX_JSON, INDEX_ARRAYS, MAP_PNG, "neighbours.png")  # build's, and query's grid
HIDDEN = 32  # the autoencoder's hidden width (vectors → 32 → 2 → 32 → vectors)
NEIGHBOURS = 10  # trustworthiness is measured on this many neighbours


@checked_arguments
def build_attribute_index(model: str | Path, catalog: str | Path, output: str | Path,
                          color_by: str | None = None, epochs: int = 300, seed: int = 0,
                          batch_size: int = 32, progress: bool = True,
                          overwrite: bool = False) -> dict:
    """Indexes the images under ``catalog`` with ``model``; returns (and writes) the index
    summary: items, skipped files, the map's figures. An ``output`` holding files other than an
    earlier index's is refused unless ``overwrite``, and so is one inside (or holding) the
    catalog."""
    check_output_dir(output, "--output", [("--catalog", catalog)])
    check_own_output(output, INDEX_JSON, FORMAT, OWN_FILES, overwrite)
    predictor = Predictor(model)
    groups = predictor.task.label_groups()
    if color_by is not None and color_by not in groups:
        raise DataError(f"--color_by {color_by}: not one of the model's groups "
                        f"({', '.join(groups)})")
    rows = predict(predictor, list_images([catalog]), top_k=len(predictor.labels),
                   batch_size=batch_size, progress=progress, probabilities=True)
    items = [r for r in rows if not r["error"]]
    skipped = [{"path": r["path"], "error": r["error"]} for r in rows if r["error"]]
    if len(items) < 3:
        raise DataError(f"catalog {catalog}: {len(items)} readable images; an index needs at "
                        f"least 3 ({len(skipped)} unreadable)")
    vectors = np.stack([r["probabilities"] for r in items]).astype(np.float32)
    encoder, autoencoder_map, autoencoder_error = fit_autoencoder(vectors, epochs, seed)
    pca_map, pca_error = _pca(vectors)
    figures = {"autoencoder": {"reconstruction_mse": autoencoder_error,
                               "trustworthiness": _trustworthiness(vectors, autoencoder_map)},
               "pca": {"reconstruction_mse": pca_error,
                       "trustworthiness": _trustworthiness(vectors, pca_map)}}
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    color_by = color_by or next(iter(groups))
    summary = {"format": FORMAT, "model": str(predictor.version_dir),
               "task": predictor.task.config(), "groups": groups, "color_by": color_by,
               "count": len(items), "skipped": skipped, "map": figures,
               "items": [{"path": r["path"], "result": _result(r)} for r in items]}
    np.savez(output / INDEX_ARRAYS, vectors=vectors, map=autoencoder_map, pca=pca_map,
             **{f"encoder_{i}": w for i, w in enumerate(encoder)})
    write_json(output / INDEX_JSON, summary)
    from runway_cnn.plots import plot_attribute_map

    plot_attribute_map(autoencoder_map, [_top(predictor.labels, v, groups[color_by])
                                         for v in vectors],
                       [r["path"] for r in items], output / MAP_PNG,
                       f"attribute map of {len(items)} items ({Path(catalog).name}), "
                       f"coloured by {color_by}")
    return {k: v for k, v in summary.items() if k != "items"}


def fit_autoencoder(vectors: np.ndarray, epochs: int, seed: int
                    ) -> tuple[list[np.ndarray], np.ndarray, float]:
    """A Keras autoencoder vectors → 32 (ReLU) → 2 → 32 (ReLU) → vectors (sigmoid), trained
    with Adam on the mean squared error: (the encoder's weights, the 2-D codes, the
    reconstruction MSE)."""
    import keras

    keras.utils.set_random_seed(seed)
    width = vectors.shape[1]
    inputs = keras.Input((width,))
    hidden = keras.layers.Dense(HIDDEN, activation="relu")(inputs)
    code = keras.layers.Dense(2, name="code")(hidden)
    decoded = keras.layers.Dense(HIDDEN, activation="relu")(code)
    decoded = keras.layers.Dense(width, activation="sigmoid")(decoded)
    autoencoder = keras.Model(inputs, decoded)
    autoencoder.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    autoencoder.fit(vectors, vectors, epochs=epochs, batch_size=min(64, len(vectors)),
                    shuffle=True, verbose=0)
    encoder = [np.asarray(w, np.float32) for layer in autoencoder.layers[1:3]
               for w in layer.get_weights()]
    codes = encode(encoder, vectors)
    error = float(np.mean((autoencoder.predict(vectors, verbose=0) - vectors) ** 2))
    return encoder, codes, error


def encode(encoder: Sequence[np.ndarray], vectors: np.ndarray) -> np.ndarray:
    """The autoencoder's 2-D codes of score vectors, from its stored weights."""
    w0, b0, w1, b1 = encoder
    return (np.maximum(vectors @ w0 + b0, 0.0) @ w1 + b1).astype(np.float32)


def _pca(vectors: np.ndarray) -> tuple[np.ndarray, float]:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0).fit(vectors)
    codes = pca.transform(vectors)
    return codes.astype(np.float32), float(np.mean((pca.inverse_transform(codes) - vectors) ** 2))


def _trustworthiness(vectors: np.ndarray, codes: np.ndarray) -> float:
    from sklearn.manifold import trustworthiness

    k = min(NEIGHBOURS, (len(vectors) - 1) // 2)
    return float(trustworthiness(vectors, codes, n_neighbors=max(k, 1)))


def _result(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("path", "error", "probabilities")}


def _top(labels: list[str], vector: np.ndarray, columns: list[int]) -> str:
    return labels[columns[int(np.argmax(vector[columns]))]]


# --- reading and querying -----------------------------------------------------------------------

class AttributeIndex:
    """A built index, checked: the JSON's items and the arrays agree, the arrays are whole."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / INDEX_JSON).is_file():
            raise DataError(f"{self.path}: not an index folder (no {INDEX_JSON}; build one with "
                            "`python -m runway_cnn.recommend build`)")
        self.meta = read_json(self.path / INDEX_JSON,
                              fix="rebuild it with `python -m runway_cnn.recommend build`")
        if self.meta.get("format") != FORMAT or not all(
                k in self.meta for k in ("items", "task", "groups", "model")):
            raise DataError(f"{self.path / INDEX_JSON}: not a runway_cnn attribute index")
        try:
            with np.load(self.path / INDEX_ARRAYS, allow_pickle=False) as arrays:
                self.vectors = np.asarray(arrays["vectors"], np.float32)
                self.map = np.asarray(arrays["map"], np.float32)
                self.encoder = [np.asarray(arrays[f"encoder_{i}"], np.float32) for i in range(4)]
        except Exception as error:  # noqa: BLE001 - any damage is one line
            raise DataError(f"{self.path / INDEX_ARRAYS}: damaged or incomplete "
                            f"({first_line(error)}); rebuild the index") from None
        self.items = self.meta["items"]
        self.labels = self.meta["task"]["labels"]
        if self.vectors.shape != (len(self.items), len(self.labels)) or \
                self.map.shape != (len(self.items), 2):
            raise DataError(f"{self.path}: the arrays ({self.vectors.shape[0]} vectors of width "
                            f"{self.vectors.shape[-1]}) do not match {INDEX_JSON} "
                            f"({len(self.items)} items, {len(self.labels)} labels); rebuild it")
        for name, array in (("vectors", self.vectors), ("map", self.map)):
            bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
            if len(bad):
                raise DataError(f"{self.path / INDEX_ARRAYS}: row {bad[0]} of '{name}' "
                                f"({self.items[bad[0]].get('path', 'an item')}) holds NaN or "
                                f"infinite values ({len(bad)} such row(s)); rebuild the index")
        if not all(np.isfinite(w).all() for w in self.encoder):
            raise DataError(f"{self.path / INDEX_ARRAYS}: the encoder's weights hold NaN or "
                            "infinite values; rebuild the index")


class AttributeSearch:
    """An index, its model and a nearest-neighbour search on the columns of ``groups`` (all by
    default), built once for many queries (a server)."""

    @checked_arguments
    def __init__(self, index: str | Path | AttributeIndex, k: int = 4,
                 groups: Sequence[str] | None = None, model: str | Path | None = None):
        self.index = index if isinstance(index, AttributeIndex) else AttributeIndex(index)
        if k < 1:
            raise RunwayError(f"--k {k}: must be at least 1")
        self.predictor = Predictor(model or self.index.meta["model"])
        if self.predictor.labels != self.index.labels:
            raise DataError(f"{self.index.path} was built by another model "
                            f"({self.index.meta['model']}: {len(self.index.labels)} labels) than "
                            f"{self.predictor.version_dir} ({len(self.predictor.labels)} labels)")
        known = self.index.meta["groups"]
        self.groups = list(groups or known)
        unknown = [g for g in self.groups if g not in known]
        if unknown:
            raise DataError(f"--attributes {','.join(unknown)}: not in the index (its "
                            f"attributes: {', '.join(known)})")
        self.columns = sorted({c for g in self.groups for c in known[g]})
        from sklearn.neighbors import NearestNeighbors

        self.search = NearestNeighbors(n_neighbors=min(k, len(self.index.items))).fit(
            self.index.vectors[:, self.columns])

    def vector(self, image: np.ndarray) -> np.ndarray:
        """A uint8 ``[h, w, 3]`` image (as ``read_image`` gives it) → its score vector, as
        :func:`~runway_cnn.inference.batch.predict` makes the catalog's."""
        return self.predictor.crop_outputs(self.predictor.crop(image)[None])["probabilities"][0]

    def nearest(self, vector: np.ndarray) -> dict:
        """A score vector's place on the map and its nearest items, each with its ``position``
        in the index."""
        vector = np.asarray(vector, np.float32)
        distances, found = self.search.kneighbors(vector[self.columns][None])
        return {"map": [float(x) for x in encode(self.index.encoder, vector[None])[0]],
                "neighbours": [{"position": int(i), "path": self.index.items[i]["path"],
                                "distance": float(d), "result": self.index.items[i]["result"]}
                               for d, i in zip(distances[0], found[0])]}


@checked_arguments
def query_attribute_index(index: str | Path | AttributeIndex, images: Sequence[str | Path],
                          k: int = 4, groups: Sequence[str] | None = None,
                          model: str | Path | None = None,
                          grid: str | Path | None = None, overwrite: bool = False
                          ) -> list[dict]:
    """Per photo: its result, its place on the map and the ``k`` nearest catalog items
    (Euclidean distance between score vectors, on the columns of ``groups`` only when given),
    as plain dicts; an unreadable photo gets ``error`` instead. ``grid``: also a PNG of them
    (not one of the photos, nor a file this package did not write, unless ``overwrite``)."""
    check_output_file(grid, "--grid", [("IMAGE", image) for image in images], overwrite)
    search = AttributeSearch(index, k, groups, model)
    predictor = search.predictor
    rows = predict(predictor, list_images(images), top_k=len(predictor.labels),
                   progress=False, probabilities=True)
    answers = [{"image": row["path"], "error": row["error"]} if row["error"] else
               {"image": row["path"], "result": _result(row),
                **search.nearest(row["probabilities"])} for row in rows]
    if grid is not None:
        from runway_cnn.plots import plot_neighbour_grid

        def describe(result: dict) -> str:
            return predictor.task.describe(result, limit=4, groups=groups and search.groups)

        plot_neighbour_grid([a for a in answers if "neighbours" in a], describe, grid,
                            f"nearest items on {', '.join(search.groups)}")
        record_written(grid)
    return answers
