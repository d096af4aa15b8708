"""Near-duplicates across splits: a held-out photo whose nearest training photo, in the frozen
backbone's feature space, is almost the same picture (a re-encoded, resized or mirrored copy,
or the next look of the same show in the same light). A run checks its own split with the
features it computes anyway, and says when a random split is measuring the group, not the
label. The audit (:mod:`runway_cnn.audit`) searches every pair with the same features, finds
exact copies by their bytes' digest and checks near ones with a perceptual hash."""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps
from sklearn.neighbors import NearestNeighbors

from runway_cnn.data.groups import GroupBy

# Cosine similarity at and above which two photos count as near-duplicates: planted copies
# (re-encoded, resized, mirrored, cropped) of real photos score 0.856-0.999 in EfficientNet-Lite0
# features, distinct photos at most 0.355; looks of one runway show often pass it too
# (BENCHMARKS.md, "Splits by group"). Other backbones' features are not calibrated.
NEAR_DUPLICATE_COSINE = 0.85
# A warning is printed when at least this share of the held-out photos has a near-duplicate in
# training (a few copies are common in scraped folders; many mean the split leaks).
WARN_SHARE = 0.05

_SEPARATED = r"[_\-. ]"
CANDIDATES = (  # --group_by patterns a leak can suggest, most specific first
    r"^(.*/[A-Za-z]+[0-9]+)" + _SEPARATED,  # a folder + a name prefix: chanel/Fall24_look_1
    r"^(.*/[^_\-. /]+)" + _SEPARATED,  # a folder + the name up to a separator: p/sku12-3
    r"^([^_\-. /]+)" + _SEPARATED,  # the name up to a separator, no folder
    "folder",  # one shoot a folder
)


def nearest_training_photo(train: np.ndarray, held_out: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """For each held-out feature row: the index of the nearest training row and their cosine
    similarity (scikit-learn's exact search, chunked)."""
    search = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(train)
    distance, index = search.kneighbors(held_out)
    return index[:, 0], 1.0 - distance[:, 0]


def near_duplicate_pairs(features: np.ndarray, threshold: float = NEAR_DUPLICATE_COSINE
                         ) -> list[tuple[int, int, float]]:
    """Every pair of rows ``(i, j, cosine)``, ``i < j``, with cosine similarity ``threshold`` or
    more (exact search), most similar first."""
    x = np.asarray(features, np.float32)
    if len(x) < 2:
        return []
    search = NearestNeighbors(radius=max(1.0 - threshold, 0.0), metric="cosine",
                              algorithm="brute").fit(x)
    distances, indices = search.radius_neighbors(x)
    pairs = [(i, int(j), float(1.0 - d)) for i, (ds, js) in enumerate(zip(distances, indices))
             for d, j in zip(ds, js) if j > i and 1.0 - d >= threshold]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))


def nearest_neighbours(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows and their cosine similarities, nearest first."""
    x = np.asarray(features, np.float32)
    k = min(k, len(x) - 1)
    search = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(x)
    distance, index = search.kneighbors(x)
    keep = index != np.arange(len(x))[:, None]  # drop each row itself (not always first: ties)
    rows = [index[i][keep[i]][:k] for i in range(len(x))]
    cosine = [1.0 - distance[i][keep[i]][:k] for i in range(len(x))]
    return np.stack(rows), np.stack(cosine)


# --- exact copies and a perceptual check --------------------------------------------------------
# Two dHashes of near copies differ in few of their 64 bits; a mirrored copy is compared with the
# mirrored hash. At or below this distance the hash agrees that two photos are one picture. The
# hash sees grey levels only: the same cut in two colours (product photos on white) or two
# looks walking one runway can agree too (BENCHMARKS.md, "Data audit").
HASH_NEAR_BITS = 6


def file_digest(data: bytes) -> str:
    """The SHA-1 of a file's bytes: equal digests are exact copies."""
    return hashlib.sha1(data).hexdigest()


def difference_hashes(image: Image.Image, size: int = 8) -> tuple[int, int]:
    """The dHash of an image (``size``² bits: is each pixel of a ``size+1`` × ``size`` grey
    thumbnail brighter than its right neighbour) and of its mirror image."""
    grey = image.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS)

    def bits(picture: Image.Image) -> int:
        a = np.asarray(picture, np.int16)
        return int("".join("1" if b else "0" for b in (a[:, 1:] > a[:, :-1]).ravel()), 2)
    return bits(grey), bits(ImageOps.mirror(grey))


def hash_distance(a: tuple[int, int], b: tuple[int, int]) -> int:
    """Bits that differ between two images' dHashes (plain with plain, or either one
    mirrored), the fewest: the same whichever image comes first."""
    return min(bin(x ^ y).count("1") for x, y in ((a[0], b[0]), (a[0], b[1]), (a[1], b[0])))


def check_split_leaks(features: dict[str, np.ndarray], sources: dict[str, Sequence[str]],
                      grouped: bool, threshold: float = NEAR_DUPLICATE_COSINE,
                      num_labels: int = 0,
                      split: Callable[[np.ndarray], object] | None = None) -> dict:
    """Counts the validation / test photos with a near-duplicate in training. ``features`` and
    ``sources`` are per split (``"train"`` and the held-out ones). Returns what ``metrics.json``
    records: the count per split, the threshold, the closest pair, a ``--group_by`` that would
    keep most pairs together and that ``split`` (the run's splitter of every source in that
    order, given a group key each; ``ValueError`` when it cannot) can split by (when the split
    is not grouped), and ``warn`` when the share of such photos is ``WARN_SHARE`` or more."""
    train = np.asarray(features["train"], np.float32)
    result = {"threshold": threshold, "near_duplicates": {}, "checked": {}, "grouped": grouped}
    pairs: list[tuple[float, str, str]] = []
    for name, rows in features.items():
        if name == "train" or len(rows) == 0:
            continue
        nearest, cosine = nearest_training_photo(train, np.asarray(rows, np.float32))
        close = np.flatnonzero(cosine >= threshold)
        result["near_duplicates"][name] = int(len(close))
        result["checked"][name] = int(len(rows))
        pairs += [(float(cosine[i]), sources[name][i], sources["train"][nearest[i]])
                  for i in close]
    flagged, checked = sum(result["near_duplicates"].values()), sum(result["checked"].values())
    pairs.sort(reverse=True)
    result["examples"] = [{"held_out": a, "train": b, "cosine": round(c, 4)}
                          for c, a, b in pairs[:5]]
    result["warn"] = bool(checked and flagged / checked >= WARN_SHARE)
    if result["warn"] and not grouped:
        all_sources = [s for split in sources.values() for s in split]
        result["suggested_group_by"] = suggest_group_by([(a, b) for _, a, b in pairs],
                                                        all_sources, num_labels, split)
    return result


def warning_line(leaks: dict) -> str | None:
    """The one line a run prints about its leaks, or None when there are few."""
    if not leaks.get("warn"):
        return None
    flagged = sum(leaks["near_duplicates"].values())
    checked = sum(leaks["checked"].values())
    pair = leaks["examples"][0]
    line = (f"warning: {flagged} of {checked} validation/test photos have a near-duplicate in "
            f"training (cosine >= {leaks['threshold']}, e.g. {pair['held_out']} ~ "
            f"{pair['train']}): the figures may measure the shoot or show, not the label")
    if leaks["grouped"]:
        return line + "; the split is grouped already: look for copies (python -m " \
                      "runway_cnn.audit)"
    suggestion = leaks.get("suggested_group_by")
    return line + (f"; split by group, e.g. --group_by '{suggestion}'" if suggestion
                   else "; split by group (--group_by)")


def suggest_group_by(pairs: Sequence[tuple[str, str]], sources: Sequence[str],
                     num_labels: int = 0,
                     split: Callable[[np.ndarray], object] | None = None) -> str | None:
    """The first of ``CANDIDATES`` that gives both photos of most ``pairs`` one key while
    making more groups than labels (a key per class would hide nothing) and, given ``split``
    (the run's splitter of ``sources`` by group keys), that the run can split by."""
    for spec in CANDIDATES:
        group_by = GroupBy(spec)
        together = sum(bool(group_by.key(a)) and group_by.key(a) == group_by.key(b)
                       for a, b in pairs)
        keys = {group_by.key(s) for s in sources}
        if together * 2 >= len(pairs) > 0 and len(keys - {""}) > max(num_labels, 1) and \
                _splits_by(split, group_by, sources):
            return spec
    return None


def _splits_by(split: Callable[[np.ndarray], object] | None, group_by: GroupBy,
               sources: Sequence[str]) -> bool:
    if split is None:
        return True
    try:
        split(group_by.keys(sources)[0])
    except ValueError:  # too few groups (of a class, a value range …) to hold any out
        return False
    return True
