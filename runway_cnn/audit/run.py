"""One audit of a dataset: read it the way a run would, compute (or reuse) the frozen features
and file hashes, find duplicates, label errors, outliers, confused classes and shortcuts, and
write what was found (:mod:`runway_cnn.audit.report`)."""
from __future__ import annotations

import csv
import io
import itertools
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from runway_cnn.audit import findings
from runway_cnn.audit.config import AuditConfig
from runway_cnn.data.dataset import ImageDataset, Split
from runway_cnn.data.leaks import (
    HASH_NEAR_BITS,
    difference_hashes,
    file_digest,
    hash_distance,
    near_duplicate_pairs,
    nearest_neighbours,
)
from runway_cnn.data.tfrecords import RECORD_PREFIX
from runway_cnn.errors import DataError, RunwayError, first_line
from runway_cnn.json_io import read_json, write_json
from runway_cnn.output_checks import check_output_dir, check_own_output, record_written
from runway_cnn.progress import ImageProgress
from runway_cnn.tasks import Task
from runway_cnn.train_dir import TrainDir

FIXED_CSV = "cleaned_labels.csv"
HASHES = "hashes.npz"
AUDIT_JSON = "audit.json"
FORMAT = "runway_cnn audit"  # in audit.json: the folder is an audit's, rewritable
OWN_FILES = (AUDIT_JSON, "audit.html", "nearest_similarity.png", "confusion*.png", "shortcut.png",
             FIXED_CSV, HASHES, "features.npz", "features.npy", "data_report.json")
PREFERRED_SPLITS = ("train", "validation", "test")  # the copy a fix keeps: the training one
GIVEN_FOLDERS = "the given split folders"  # where the splits come from (audit.json "splits")
# what --fix says of given split folders: a --labels_csv run makes its own splits
SPLITS_NOT_KEPT = ("--fix: cleaned_labels.csv keeps the given split folders only in each file "
                   "name, and a --labels_csv run splits its rows again: test/ photos would be "
                   "trained on and, under --refit auto, reach the export; to keep test/ held "
                   "out, train on the train/ and validation/ rows only")
# --fix removes a near copy only when the hash agrees and the features are this close, and a
# label-error candidate only when the regression gives its suggested label this probability and
# predicts that question with WEAK_ACCURACY or more out of fold (below it, candidates are mostly
# hard photos, not wrong labels): the others are listed, not removed.
FIX_COSINE = 0.9
FIX_SUGGESTED = 0.5
WEAK_ACCURACY = 0.7


class Audit:
    """The data of one audit: the pooled images (ordered by source), their split, features,
    digests and perceptual hashes."""

    def __init__(self, config: AuditConfig):
        from runway_cnn.training.datasets import load_dataset

        self.config = config
        self.out = Path(config.output_dir)
        self.run_config = config.run_config()
        check_output_dir(self.out, "--output_dir", self.run_config.inputs())
        check_own_output(self.out, AUDIT_JSON, FORMAT, OWN_FILES, config.overwrite,
                         "--output_dir")
        start = time.perf_counter()
        self.dataset, self.task = load_dataset(self.run_config, None, make_splits=False)
        self.seconds: dict[str, float] = {"scan": round(time.perf_counter() - start, 2)}
        self.dataset: ImageDataset
        self.task: Task
        self.pool: Split = self.dataset.pooled()
        self.sources = list(self.pool.sources)
        if len(self.sources) < 3:
            raise DataError(f"{self.dataset.root}: {len(self.sources)} usable image(s); an "
                            "audit needs at least 3")
        self.split_of, self.split_origin = self._splits()
        self.stamps = self._stamps()
        self.out.mkdir(parents=True, exist_ok=True)
        if not (self.out / AUDIT_JSON).exists():  # a killed first audit's folder stays its own
            write_json(self.out / AUDIT_JSON, {"format": FORMAT, "finished": False})

    # -- splits --------------------------------------------------------------------------------
    def _splits(self) -> tuple[list[str | None], str]:
        """Each image's split: a trained run's (``--train_dir``), the given split folders or
        TFRecord splits, or None (one pool)."""
        if self.config.train_dir:
            path = TrainDir(Path(self.config.train_dir)).splits
            saved = read_json(path, fix="give the train dir of a run (it writes splits.json)")
            of = {item["source"]: name for name, items in saved.items()
                  for item in items if isinstance(item, dict) and "source" in item}
            if not of:
                raise RunwayError(f"{path} names no image; give the train dir of a run")
            return [of.get(s) for s in self.sources], f"the run's splits ({path})"
        settings = self.dataset.split_settings
        if settings.get("given_splits") or settings.get("tfrecords"):
            of = {s: name for name, split in self.dataset.splits.items() for s in split.sources}
            return [of[s] for s in self.sources], (
                "the TFRecord splits" if settings.get("tfrecords") else GIVEN_FOLDERS)
        return [None] * len(self.sources), "none (one pool)"

    # -- features and hashes (cached in the output dir) ---------------------------------------
    def features(self) -> np.ndarray:
        from runway_cnn.backbones.features import extract_features, load_features, save_features
        from runway_cnn.training.trainer import build_backbone

        files = TrainDir(self.out)
        backbone = build_backbone(self.run_config)
        start = time.perf_counter()
        features, seconds = load_features(files, self.pool, backbone, "avg", self.stamps)
        self.cached = features is not None
        if features is None:
            features = extract_features(backbone, self.pool.paths, self.config.batch_size,
                                        progress=True)
            seconds = time.perf_counter() - start
            save_features(files, self.pool, backbone, "avg", features, seconds, self.stamps)
        self.backbone_name = backbone.name
        self.seconds["features"] = round(time.perf_counter() - start, 2)
        self.seconds["features_first_pass"] = round(seconds, 2)
        return np.asarray(features, np.float32)

    def _stamps(self) -> list[str]:
        """Each image file's inode, change time, size and modification time (ns), with its
        name the key of the caches: a file changed since is read again, even one replaced with
        its old size and modification time put back (``touch -r``: the change time moves).
        Empty for a TFRecord's image."""
        stamps = []
        for source, path in zip(self.sources, self.pool.paths):
            original = self.dataset.root / source
            stat = None if path.startswith(RECORD_PREFIX) else (
                original if original.is_file() else Path(path)).stat()
            stamps.append(f"{stat.st_ino}:{stat.st_ctime_ns}:{stat.st_size}:{stat.st_mtime_ns}"
                          if stat else "")
        return stamps

    def hashes(self) -> tuple[list[str], list[tuple[int, int]]]:
        """The SHA-1 of each file's bytes and its dHashes (plain and mirrored); those of files
        unchanged since the last audit into the output dir are reused."""
        cache = self.out / HASHES
        start = time.perf_counter()
        known = {}
        if cache.exists():
            try:
                with np.load(cache) as saved:
                    if "stamps" in saved.files:
                        known = dict(zip(zip(saved["sources"].tolist(),
                                             saved["stamps"].tolist()),
                                         zip(saved["sha1"].tolist(), saved["dhash"].tolist(),
                                             saved["dhash_mirror"].tolist())))
            except Exception as error:  # noqa: BLE001 - a damaged cache is recomputed
                print(f"{cache} is damaged ({first_line(error)}): hashing again", flush=True)
        keys = list(zip(self.sources, self.stamps))
        new = [i for i, key in enumerate(keys) if key not in known]
        if new:
            print(f"file and perceptual hashes of {len(new)} images:", flush=True)
            bar = ImageProgress(len(new))
            for i, (data, image) in zip(new, self.images(new)):
                a, b = difference_hashes(image)
                known[keys[i]] = (file_digest(data), str(a), str(b))  # 64 bits: as text
                bar.add(1)
        digests = [known[key][0] for key in keys]
        dhashes = [(int(known[key][1]), int(known[key][2])) for key in keys]
        tmp = cache.with_name(f".{cache.name}.tmp.npz")
        np.savez(tmp, sources=np.array(self.sources), stamps=np.array(self.stamps, dtype=str),
                 sha1=np.array(digests), dhash=np.array([known[key][1] for key in keys]),
                 dhash_mirror=np.array([known[key][2] for key in keys]))
        tmp.replace(cache)
        self.seconds["hashes"] = round(time.perf_counter() - start, 2)
        return digests, dhashes

    def images(self, rows: Iterable[int]) -> Iterator[tuple[bytes, Image.Image]]:
        """(the file's bytes, the RGB image) of each row, in order: the user's file (its bytes
        and, for odd ones, the converted copy's pixels), or a TFRecord's encoded image."""
        rows = list(rows)
        paths = [self.pool.paths[i] for i in rows]
        if paths and paths[0].startswith(RECORD_PREFIX):
            yield from self._record_images(rows)
            return
        for i, path in zip(rows, paths):
            original = self.dataset.root / self.sources[i]
            data = original.read_bytes() if original.is_file() else Path(path).read_bytes()
            with Image.open(path) as image:
                image.draft("RGB", (256, 256))  # JPEG: decode at a reduced scale, fast
                yield data, image.convert("RGB")

    def _record_images(self, rows: list[int]):
        from runway_cnn.data import pipeline

        wanted = {self.pool.paths[i]: n for n, i in enumerate(rows)}
        found: dict[int, bytes] = {}
        every = list(dict.fromkeys(self.pool.paths))
        for position, data in pipeline._encoded(every).as_numpy_iterator():
            n = wanted.get(every[position])
            if n is not None:
                found[n] = bytes(data)
        for n in range(len(rows)):
            image = Image.open(io.BytesIO(found[n]))
            image.draft("RGB", (256, 256))
            yield found[n], image.convert("RGB")


def audit_dataset(config: AuditConfig | None = None, **settings) -> dict:
    """Audits a dataset (``config`` or its fields as keyword arguments) and writes
    ``audit.json``, ``audit.html``, the PNGs and, with ``fix``, ``cleaned_labels.csv`` into the
    output dir. Returns what ``audit.json`` holds."""
    from runway_cnn.audit import report

    config = config or AuditConfig(**settings)
    clock = time.perf_counter()
    audit = Audit(config)
    features = audit.features()
    digests, dhashes = audit.hashes()
    start = time.perf_counter()
    result = {"format": FORMAT, "dataset": str(audit.dataset.root), "task": config.task,
              "settings": config.to_dict(), "images": len(audit.sources),
              "labels": list(audit.task.labels), "splits": audit.split_origin,
              "split_counts": _counts(audit.split_of), "backbone": audit.backbone_name,
              "features_cached": audit.cached, "skipped": len(audit.dataset.skipped),
              "skipped_files": list(audit.dataset.skipped), "not_done": [], "notes": [],
              "label_conflicts_carry": _agreement(audit)[1]}
    write_json(TrainDir(audit.out).data_report, audit.dataset.report())  # as a run's
    result["exact_duplicates"] = exact_duplicates(audit, digests)
    result["near_duplicates"] = near_duplicates(audit, features, digests, dhashes)
    x = findings.prepare(features)
    label_findings(audit, x, result)
    result["outliers"] = outlier_findings(audit, features)
    grouping = audit.dataset.split_settings.get("grouping")
    if grouping:
        result["grouping"] = {k: v for k, v in grouping.items()
                              if k not in ("groups_per_split",)}
    result["shortcut"] = shortcut(audit, x, result)
    if config.fix:
        result["fix"] = write_fix(audit, result)
        if audit.split_origin == GIVEN_FOLDERS:
            result["notes"].append(SPLITS_NOT_KEPT)
    audit.seconds["findings"] = round(time.perf_counter() - start, 2)
    audit.seconds["total"] = round(time.perf_counter() - clock, 2)
    result["seconds"] = audit.seconds
    result["outputs"] = report.write_outputs(audit, result)
    write_json(audit.out / AUDIT_JSON, result)
    return result


def _counts(split_of: list[str | None]) -> dict[str, int]:
    names = [name or "(not in the run)" for name in split_of]
    order = list(PREFERRED_SPLITS) + sorted(set(names) - set(PREFERRED_SPLITS))
    return {name: names.count(name) for name in order if name in names}


def _scope(audit: Audit, rows) -> str:
    names = sorted({audit.split_of[i] or "-" for i in rows},
                   key=lambda s: (PREFERRED_SPLITS + ("-",)).index(s)
                   if s in PREFERRED_SPLITS + ("-",) else 9)
    if audit.split_origin.startswith("none"):
        return "within the dataset"
    return f"within {names[0]}" if len(names) == 1 else "across " + "|".join(names)


def _label_text(audit: Audit, i: int) -> str:
    raw = audit.pool.raw_labels[i] if audit.pool.raw_labels is not None else None
    return str(raw) if raw is None else audit.task.raw_text(raw)


def _agreement(audit: Audit) -> tuple[Callable[[int, int], bool], str]:
    """Whether two rows, copies of one photo, carry the same label by the task's rule
    (:meth:`~runway_cnn.tasks.base.TaskLabels.copies_agree`), and what copies that do not carry,
    in words."""
    raw = audit.pool.raw_labels
    if raw is None:
        return (lambda i, j: True), "different labels"
    agree, conflict = audit.task.copies_agree(raw)
    return (lambda i, j: agree(raw[i], raw[j])), conflict


def exact_duplicates(audit: Audit, digests: list[str]) -> list[dict]:
    """Groups of files with the same bytes, with their splits and labels."""
    members: dict[str, list[int]] = {}
    agree, _ = _agreement(audit)
    for i, digest in enumerate(digests):
        members.setdefault(digest, []).append(i)
    out = []
    for digest, rows in members.items():
        if len(rows) > 1:
            same = all(agree(i, j) for i, j in itertools.combinations(rows, 2))
            out.append({"sha1": digest, "files": [audit.sources[i] for i in rows],
                        "splits": [audit.split_of[i] for i in rows],
                        "scope": _scope(audit, rows), "same_label": same,
                        "labels": [_label_text(audit, i) for i in rows]})
    return sorted(out, key=lambda d: d["files"][0])


def near_duplicates(audit: Audit, features: np.ndarray, digests: list[str],
                    dhashes: list[tuple[int, int]]) -> dict:
    """Pairs of different files whose features' cosine is at or above the threshold, each with
    the perceptual hash's distance as a check; and every photo's nearest-neighbour cosine (for
    the histogram)."""
    threshold = audit.config.near_duplicate_cosine
    agree, _ = _agreement(audit)
    pairs = []
    for i, j, cosine in near_duplicate_pairs(features, threshold):
        if digests[i] == digests[j]:
            continue  # an exact copy, listed there
        bits = hash_distance(dhashes[i], dhashes[j])
        pairs.append({"files": [audit.sources[i], audit.sources[j]],
                      "splits": [audit.split_of[i], audit.split_of[j]],
                      "scope": _scope(audit, (i, j)), "cosine": round(cosine, 4),
                      "hash_bits": bits, "hash_agrees": bits <= HASH_NEAR_BITS,
                      "same_label": agree(i, j),
                      "labels": [_label_text(audit, i), _label_text(audit, j)]})
    _, nearest = nearest_neighbours(features, 1)
    audit.nearest_cosine = nearest[:, 0]
    across = [p for p in pairs if p["scope"].startswith("across")]
    return {"threshold": threshold, "hash_near_bits": HASH_NEAR_BITS, "pairs": pairs,
            "count": len(pairs), "across_splits": len(across),
            "hash_agrees": sum(p["hash_agrees"] for p in pairs)}


def _grouped_probabilities(audit: Audit, x: np.ndarray, y: np.ndarray, k: int,
                           groups: np.ndarray | None) -> tuple[np.ndarray, int, int, str]:
    """Out-of-fold probabilities; with groups, by group for classes with two or more groups
    (classes in one group are predicted with plain folds: no other group could teach them).
    Returns them, the number of rows predicted with plain folds for that reason, and the
    folds used and why fewer than ``--folds``."""
    c = audit.config
    plain = findings.out_of_fold_probabilities(x, y, k, folds=c.folds, seed=c.seed)
    used = findings.fold_count(y, c.folds)
    why = f"no class has more than {used} photos"
    if groups is None:
        return plain, 0, used, why
    pinned = np.zeros(len(y), bool)
    for label in np.unique(y):
        if len(set(groups[y == label].tolist())) < 2:
            pinned |= y == label
    free = np.flatnonzero(~pinned)
    folds = min(c.folds, len(set(groups[free].tolist())))
    if folds < 2 or len(np.unique(y[free])) < 2:
        return plain, int(len(y)), used, why
    probabilities = plain.copy()
    probabilities[free] = findings.out_of_fold_probabilities(x[free], y[free], k, groups[free],
                                                             folds=folds, seed=c.seed)
    return probabilities, int(pinned.sum()), folds, f"only {folds} groups"


def label_findings(audit: Audit, x: np.ndarray, result: dict) -> None:
    """Label-error candidates (confident learning on out-of-fold probabilities) and the most
    confused label pairs, per label question of the task."""
    questions = audit.task.audit_questions(audit.pool.targets)
    if not questions:
        result["not_done"].append(f"label errors and confused pairs: not done for the "
                                  f"{audit.config.task} task (duplicates, outliers and the "
                                  "shortcut check are)")
        result["label_errors"], result["confused_pairs"] = [], []
        return
    groups = audit.pool.groups
    errors, confused, accuracy, folds, fewer = [], [], {}, {}, []
    audit.confusion = []
    for attribute, column, names in questions:
        known = np.flatnonzero(column >= 0)
        y = column[known]
        if len(np.unique(y)) < 2:
            continue
        probabilities, plain_rows, folds[attribute or "label"], why = _grouped_probabilities(
            audit, x[known], y, len(names), None if groups is None else groups[known])
        if folds[attribute or "label"] < audit.config.folds:
            fewer.append(f"{folds[attribute or 'label']} used"
                         + (f" for {attribute}" if attribute else "") + f" ({why})")
        if plain_rows and groups is not None:
            result["notes"].append(
                f"{plain_rows} photos of {'attribute ' + attribute + ' ' if attribute else ''}"
                "classes whose images are all in one group were cross-validated by photo, "
                "not by group")
        found = findings.confident_learning(y, probabilities)
        predicted = probabilities.argmax(axis=1)
        accuracy[attribute or "label"] = round(float(np.mean(predicted == y)), 4)
        weak = accuracy[attribute or "label"] < WEAK_ACCURACY
        if weak and attribute is None:
            result["notes"].append(
                f"the features predict the labels poorly (out-of-fold accuracy "
                f"{accuracy['label']:.2f} < {WEAK_ACCURACY}): most label-error candidates are "
                "photos the regression finds hard, not wrong labels; --fix keeps them")
        for rank, r in enumerate(found["issues"].tolist()):
            i = int(known[r])
            errors.append({"file": audit.sources[i], "split": audit.split_of[i],
                           **({"attribute": attribute} if attribute else {}),
                           "given": names[y[r]], "suggested": names[found["suggested"][r]],
                           "self_confidence": round(float(found["self_confidence"][r]), 4),
                           "suggested_probability": round(
                               float(probabilities[r, found["suggested"][r]]), 4),
                           "rank": rank, "fixable": bool(
                               not weak and probabilities[r, found["suggested"][r]]
                               >= FIX_SUGGESTED)})
        matrix, pairs = findings.confused_pairs(y, predicted, names)
        audit.confusion.append((attribute, matrix, names))
        confused += [{**({"attribute": attribute} if attribute else {}), **p} for p in pairs]
    errors.sort(key=lambda e: e["self_confidence"])
    result["label_errors"] = errors
    result["confused_pairs"] = confused
    result["out_of_fold_accuracy"] = accuracy
    result["folds"] = {"asked": audit.config.folds, "used": folds}
    if fewer:
        result["notes"].append(f"--folds {audit.config.folds}: " + "; ".join(fewer))
    used = sorted(set(folds.values()))
    result["label_error_method"] = (
        f"confident learning on {'/'.join(map(str, used)) or audit.config.folds}-fold "
        f"out-of-fold probabilities of a logistic regression (C {findings.C}) on the frozen "
        "features" + (", folds by group" if groups is not None else ""))


def outlier_findings(audit: Audit, features: np.ndarray) -> list[dict]:
    rows, distance = findings.outliers(features, audit.config.outlier_share)
    audit.density = distance
    return [{"file": audit.sources[i], "split": audit.split_of[i],
             "label": _label_text(audit, i),
             "mean_cosine_distance": round(float(distance[i]), 4)} for i in rows.tolist()]


def shortcut(audit: Audit, x: np.ndarray, result: dict) -> dict | None:
    """The shortcut check (needs ``--group_by``)."""
    groups = audit.pool.groups
    if groups is None:
        result["not_done"].append("shortcut check: give --group_by (a show, a shoot, a "
                                  "product) to compare how well the group and the label are "
                                  "predicted")
        return None
    columns = audit.task.shortcut_columns(audit.pool.targets)
    check = findings.shortcut_check(x, columns, groups, audit.config.folds, audit.config.seed)
    questions = audit.task.audit_questions(audit.pool.targets)
    if len(questions) == 1 and questions[0][0] is None:  # one label per photo: a class
        label = questions[0][1]
        per_class = {int(c): set(groups[label == c].tolist())
                     for c in np.unique(label[label >= 0])}
        single = sum(len(g) == 1 for g in per_class.values())
        check["labels_in_one_group"] = single
        if single == len(per_class):
            result["notes"].append("every label has all its images in one group (one group "
                                   "per class): the shortcut check cannot tell the group from "
                                   "the label")
            check["at_risk"] = None
    return check


def write_fix(audit: Audit, result: dict) -> dict:
    """``cleaned_labels.csv``: every image's row in the task's columns (paths relative to the
    dataset folder) except the copies of a kept photo with the same label (exact copies, and
    near copies the perceptual hash confirms; the training copy is kept) and the label-error
    candidates. Copies with different labels are label conflicts: kept and listed. A class
    the removals would empty keeps its photos. Returns the removed files with reasons."""
    index = {s: i for i, s in enumerate(audit.sources)}
    rank = lambda i: ((PREFERRED_SPLITS.index(audit.split_of[i])  # noqa: E731
                       if audit.split_of[i] in PREFERRED_SPLITS else 3), audit.sources[i])
    copies: dict[int, list[tuple[float, int, str]]] = {}  # row → (closeness, other row, what)
    conflicts = []
    agree, conflict = _agreement(audit)
    links = [(pair, 2.0, "exact copy", "same SHA-1") for d in result["exact_duplicates"]
             for pair in itertools.combinations(d["files"], 2)]
    links += [(p["files"], p["cosine"], "near copy",
               f"cosine {p['cosine']}, dHash {p['hash_bits']} bits")
              for p in result["near_duplicates"]["pairs"]
              if p["hash_agrees"] and p["cosine"] >= FIX_COSINE]
    for files, closeness, kind, how in links:
        a, b = (index[f] for f in files)
        if not agree(a, b):
            conflicts.append({"files": list(files), "kind": kind,
                              "labels": [_label_text(audit, a), _label_text(audit, b)]})
            continue
        for i, j in ((a, b), (b, a)):
            copies.setdefault(i, []).append((closeness, j, f"{kind} of {audit.sources[j]} "
                                                           f"({how})"))
    removed: dict[int, str] = {}
    for i in sorted(range(len(audit.sources)), key=rank):  # a copy of a kept photo goes
        kept = [c for c in copies.get(i, ()) if c[1] not in removed and rank(c[1]) < rank(i)]
        if kept:
            removed[i] = max(kept)[2]
    candidates: dict[int, str] = {}
    blanked: dict[int, set[str]] = {}  # attributes: a doubtful cell becomes unknown
    for error in result["label_errors"]:
        i = index[error["file"]]
        if not error["fixable"] or i in removed:
            continue
        if "attribute" in error:
            blanked.setdefault(i, set()).add(error["attribute"])
        else:
            candidates.setdefault(i, f"label-error candidate: given {error['given']}, "
                                     f"suggested {error['suggested']}")
    classes = audit.task.raw_classes
    raw = audit.pool.raw_labels
    # the classes the kept copies hold (a regression's copies may differ a little in value)
    every = set().union(*(classes(raw[i]) for i in range(len(audit.sources))
                          if i not in removed))
    left = set().union(*(classes(raw[i], blanked.get(i, set()))
                         for i in range(len(audit.sources))
                         if i not in removed and i not in candidates))
    emptied = sorted(every - left)
    if emptied:  # a fix never removes a class: its candidates stay
        candidates = {i: why for i, why in candidates.items()
                      if not classes(raw[i]) & set(emptied)}
        blanked = {i: {a for a in cells if not (classes(raw[i]) - classes(raw[i], {a}))
                       & set(emptied)} for i, cells in blanked.items()}
        result["notes"].append(f"--fix kept the label-error candidates of {', '.join(emptied)}: "
                               "removing them would leave no photo of it")
    removed |= candidates
    path = audit.out / FIXED_CSV
    header, cells = _manifest_columns(audit, blanked)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, source in enumerate(audit.sources):
            if i not in removed:
                writer.writerow([source, *cells(i)])
    tmp.replace(path)
    record_written(path)  # edited by hand later, it is the user's: never written over
    return {"manifest": str(path), "kept": len(audit.sources) - len(removed),
            "removed": [{"file": audit.sources[i], "reason": why}
                        for i, why in sorted(removed.items())],
            "cells_made_unknown": [{"file": audit.sources[i], "attributes": sorted(a)}
                                   for i, a in sorted(blanked.items()) if a and i not in removed],
            "label_conflicts": conflicts,
            "classes_kept_whole": emptied,
            "note": f"removed: exact copies (same SHA-1) and near copies the hash confirms at "
                    f"cosine >= {FIX_COSINE} of a kept photo with the same label (the training "
                    "copy is kept), and label-error candidates whose suggested label has "
                    f"probability >= {FIX_SUGGESTED} where the labels are predicted with "
                    f"accuracy >= {WEAK_ACCURACY} (for attributes the doubtful cell is made "
                    "empty, unknown, instead) unless that would leave a class without a photo; "
                    f"copies with {conflict} are label conflicts, kept and listed; "
                    "other findings and outliers are listed, not removed; the given split "
                    "folders become part of each file name (a run on the manifest splits its "
                    "rows again)"}


def _manifest_columns(audit: Audit, blanked: dict[int, set[str]]):
    """The header of the fixed manifest and a function giving a row's cells after filename:
    the task's columns (those its CSV reader reads back) and the ``--group_by column:NAME``
    column, written once."""
    raw = audit.pool.raw_labels
    group_by = audit.config.group_by or ""
    column = group_by[len("column:"):] if group_by.startswith("column:") else None
    groups = audit.pool.groups

    def group_cell(i):
        return [] if column is None else [str(groups[i]).lstrip("\0") if not str(
            groups[i]).startswith("\0") else ""]
    extra = [column] if column else []
    own = [c for c in audit.task.manifest_columns() if c != column]

    def cells(i):
        given = audit.task.manifest_cells(raw[i], blanked.get(i, set()))
        return [given[c] for c in own] + group_cell(i)
    return ["filename", *own, *extra], cells
