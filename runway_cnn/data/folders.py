"""Image-folder datasets: find the images, check each one once, convert the odd ones, split them.

A dataset is a folder with one sub-folder per class, or a folder with ``train/``, ``validation/``
(optional: carved from train) and ``test/`` (optional) sub-folders laid out that way. Every file is
decoded once by :func:`scan_image_folder`; unusable files are skipped and listed in the report,
and images ``tf.io.decode_image`` would read wrongly (not 8-bit RGB, EXIF-rotated, GIF, WEBP,
TIFF …) are converted to PNG copies under ``work_dir/converted/``. User files are never modified.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from runway_cnn.data.dataset import ImageDataset, Split
from runway_cnn.data.groups import GroupBy, describe_split_groups, group_splits, too_few_groups
from runway_cnn.data.images import CheckedImage, check_images
from runway_cnn.data.splits import (
    SplitRule,
    TooFewGroups,
    check_fractions,
    check_label_counts,
    check_labels_reached,
    stratified_split,
)
from runway_cnn.errors import DataError, control_character
from runway_cnn.json_io import write_json
from runway_cnn.registry import Registry
from runway_cnn.train_dir import TrainDir

SPLITS = ("train", "validation", "test")
REPO_DATASETS_DIR = Path(__file__).resolve().parents[2] / "datasets"
DATASETS: Registry[Path] = Registry("dataset")
DATASETS.register("clothing_sample", REPO_DATASETS_DIR / "clothing-sample")


def dataset_name(name_or_path: str) -> str:
    """The dataset's folder name (the default serving name), whether or not it still exists."""
    if name_or_path in DATASETS:
        return DATASETS.get(name_or_path).name
    return Path(name_or_path).expanduser().resolve().name


def resolve_dataset_dir(name_or_path: str) -> Path:
    """A registered dataset name (``DATASETS``) or an existing folder, as an absolute path."""
    if name_or_path in DATASETS:
        path = DATASETS.get(name_or_path)
        if not path.is_dir():
            raise DataError(f"dataset {name_or_path!r} ships with the runway_cnn source repository "
                            f"(datasets/{path.name}) and is not at {path}; run from a checkout of "
                            "the repository or pass the dataset folder's path")
        return path
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    known = ", ".join(DATASETS.names())
    raise DataError(f"dataset {name_or_path!r} is neither a folder nor a registered dataset "
                    f"(registered: {known})")


def write_run_files(dataset: ImageDataset, train_dir: Path) -> None:
    """Write ``splits.json`` (split → [{"source", "target"}, with "group" when grouped]) and
    ``data_report.json``."""
    files = TrainDir(Path(train_dir))
    files.path.mkdir(parents=True, exist_ok=True)
    splits = {name: [{"source": src, "target": np.asarray(t).tolist(),
                      **({} if s.groups is None else {"group": s.groups[i].lstrip("\0")})}
                     for i, (src, t) in enumerate(zip(s.sources, s.targets))]
              for name, s in dataset.splits.items()}
    write_json(files.splits, splits)
    write_json(files.data_report, dataset.report())


def scan_image_folder(dataset_dir: str | os.PathLike, *, validation_fraction: float = 0.1,
                      test_fraction: float = 0.1, seed: int = 0,
                      work_dir: Path | None = None, make_splits: bool = True,
                      group_by: str | None = None,
                      split: SplitRule = stratified_split) -> ImageDataset:
    """Find, check (decode) and split every image of a dataset folder.

    With given ``train/`` (``validation/``, ``test/``) folders those splits are used; a missing
    ``validation/`` is carved from train with ``validation_fraction``, a missing ``test/`` means no
    test split. Otherwise the images are split by ``split`` (a task's rule; by default
    stratified by class) with ``validation_fraction`` / ``test_fraction`` / ``seed``, keeping
    each ``group_by`` group (:mod:`runway_cnn.data.groups`) in one split
    (:func:`carve_splits`). With ``make_splits=False`` nothing is carved: the splits are the
    given folders, or all images as ``"train"`` (what evaluation needs). Converted copies go under
    ``work_dir/converted/`` (a temporary folder that lives as long as the returned object when
    ``work_dir`` is None).
    """
    check_fractions(validation_fraction, test_fraction)
    walker = _Walker(_dataset_root(dataset_dir))
    if group_by and GroupBy(group_by).column is not None:
        raise DataError(f"--group_by {group_by} needs --labels_csv: it reads that CSV's column; "
                        f"{walker.root} is read as class folders (group by folder or a pattern)")
    classes = walker.find_class_folders()
    tmpdir = None
    if work_dir is None:
        tmpdir = tempfile.TemporaryDirectory(prefix="runway_cnn_converted_")
        work_dir = Path(tmpdir.name)
    checked = _check_all(walker, classes, TrainDir(Path(work_dir)).converted)
    class_names = sorted(classes["train"])
    by_split = {split: _folder_split(walker.root, folders, class_names, checked, split)
                for split, folders in classes.items()}
    skipped = walker.skipped + [{"path": c.source, "reason": c.reason}
                                for cs in checked.values() for c in cs if c.path is None]
    converted = [{"source": c.source, "path": c.path, "reason": c.reason}
                 for cs in checked.values() for c in cs if c.path is not None and c.reason]
    if tmpdir is not None and not converted:
        tmpdir.cleanup()
        tmpdir = None
    grouping = group_splits(by_split, GroupBy(group_by)) if group_by else None
    splits = {s: by_split[s] for s in SPLITS if s in by_split}
    settings = {"layout": walker.layout, "given_splits": (
        list(splits) if walker.layout == "split folders" else [])}
    if grouping is not None:
        settings["grouping"] = {**grouping, **describe_split_groups(splits)}
    dataset = ImageDataset(walker.root, class_names, splits, sorted(skipped, key=_by_path),
                           sorted(converted, key=lambda d: d["source"]),
                           sorted(walker.ignored, key=_by_path), settings,
                           count_labels=class_counter(class_names), _tmpdir=tmpdir)
    if make_splits:
        carve_splits(dataset, split, validation_fraction, test_fraction, seed)
    return dataset


def class_counter(class_names: list[str]):
    """Counts class ids per class name (the report's counts of a class-folder dataset)."""
    def count(targets: np.ndarray) -> dict[str, int]:
        counts = np.bincount(np.asarray(targets, int), minlength=len(class_names))
        return {name: int(n) for name, n in zip(class_names, counts)}
    return count


def _folder_split(root: Path, folders: dict[str, str], class_names: list[str],
                  checked: dict[tuple[str, str], list[CheckedImage]], split: str) -> Split:
    """The usable images of one split folder (every split has every class folder)."""
    paths, labels, sources = [], [], []
    for label, name in enumerate(class_names):
        usable = [c for c in checked[(split, name)] if c.path is not None]
        if not usable:
            why = "; ".join(f"{c.source}: {c.reason}" for c in checked[(split, name)][:3])
            raise DataError(f"class folder {root / folders[name]} has no usable image ({why})")
        paths += [c.path for c in usable]
        sources += [c.source for c in usable]
        labels += [label] * len(usable)
    return Split(paths, np.array(labels, np.int32), sources, [class_names[i] for i in labels])


# --- layout ---------------------------------------------------------------------------------

def _dataset_root(dataset_dir: str | os.PathLike) -> Path:
    path = Path(dataset_dir).expanduser()
    if not path.exists():
        raise DataError(f"dataset folder {path} does not exist")
    if not path.is_dir():
        raise DataError(f"dataset folder {path} is not a folder")
    return path.resolve()


class _Walker:
    """Lists the class folders and their files, recording what it leaves out."""

    def __init__(self, root: Path):
        self.root = root
        self.skipped: list[dict] = []
        self.ignored: list[dict] = []
        self.layout = "class folders"

    def find_class_folders(self) -> dict[str, dict[str, str]]:
        """split → class name → folder relative to root; checks the split folders' layout."""
        top = self._subfolders("")
        if "train" in top:
            others = sorted(set(top) - set(SPLITS))
            if others:
                raise DataError(f"dataset folder {self.root} mixes split folders (train/) with "
                                f"other folders: {', '.join(others)}; expected train/, "
                                "validation/ and optionally test/")
            self.layout = "split folders"
            classes = {s: self._subfolders(s) for s in SPLITS if s in top}
        elif set(top) & {"validation", "test"}:
            raise DataError(f"dataset folder {self.root} has validation/ or test/ but no train/")
        else:
            classes = {"train": top}
        train_dir = self.root / ("train" if self.layout == "split folders" else "")
        for name in classes["train"]:
            if not _is_utf8(name):
                raise DataError(f"class folder {train_dir / name}: its name is not UTF-8 text and "
                                "cannot be a label; rename it")
            char = control_character(name)
            if char is not None:
                raise DataError(f"class folder {str(train_dir / name)!r}: its name contains the "
                                f"control character {char} and cannot be a label; rename it")
        if len(classes["train"]) < 2:
            raise DataError(f"{train_dir} needs at least 2 class folders (one per class), found "
                            f"{len(classes['train'])}")
        for split, folders in classes.items():
            unknown = sorted(set(folders) - set(classes["train"]))
            if unknown:
                raise DataError(f"{self.root / split} has class folders that {train_dir} lacks "
                                f"(unknown labels): {', '.join(unknown)}")
            missing = sorted(set(classes["train"]) - set(folders))
            if missing:
                raise DataError(f"{self.root / split} has no folder for class(es) "
                                f"{', '.join(missing)}: every split needs images of every class")
        return classes

    def _subfolders(self, rel: str) -> dict[str, str]:
        found = {}
        for entry, rel_entry in self._entries(rel):
            if entry.is_dir():
                found[entry.name] = rel_entry
            else:
                self.ignored.append({"path": rel_entry, "reason": "not in a class folder"})
        return found

    def files(self, rel: str, _seen: frozenset = frozenset(),
              _class_dir: Path | None = None) -> Iterator[str]:
        """Files under a class folder (recursively), relative to the root, sorted. A link inside
        it must stay inside it: one leading above it (``..``, another class) would give other
        images this class's label."""
        real = (self.root / rel).resolve()
        if real in _seen:
            self.skipped.append({"path": rel, "reason": "folder link loop"})
            return
        class_dir = _class_dir or real
        for entry, rel_entry in self._entries(rel, class_dir):
            if entry.is_dir():
                yield from self.files(rel_entry, _seen | {real}, class_dir)
            elif entry.is_file():
                yield rel_entry
            else:
                self.skipped.append({"path": rel_entry, "reason": "not a regular file"})

    def _entries(self, rel: str, within: Path | None = None
                 ) -> Iterator[tuple[os.DirEntry, str]]:
        """Non-hidden entries whose links stay inside ``within`` (default: the root); the rest
        is recorded as skipped."""
        with os.scandir(self.root / rel) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel_entry = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name.startswith("."):
                kind = "folder" if entry.is_dir() else "file"
                self.skipped.append({"path": rel_entry, "reason": f"hidden {kind}"})
            elif entry.is_symlink() and not self._link_ok(entry, rel_entry, within or self.root):
                continue
            else:
                yield entry, rel_entry

    def _link_ok(self, entry: os.DirEntry, rel_entry: str, within: Path) -> bool:
        try:
            target = Path(entry.path).resolve()
        except (RuntimeError, OSError):  # Python < 3.13 raises RuntimeError on a loop
            reason = "link loop"
        else:
            if not target.is_relative_to(self.root):
                reason = "outside dataset dir"
            elif not target.exists():
                reason = "broken link"
            elif not target.is_relative_to(within) or target == within:
                reason = (f"link to {target.relative_to(self.root) if target != self.root else '.'}"
                          f" leads out of its class folder {within.relative_to(self.root)}")
            else:
                return True
        self.skipped.append({"path": rel_entry, "reason": reason})
        return False


# --- checking and converting --------------------------------------------------------------


def _check_all(walker: _Walker, classes: dict[str, dict[str, str]],
               converted_dir: Path) -> dict[tuple[str, str], list[CheckedImage]]:
    """(split, class) → the checked files, decoded in a thread pool (PIL releases the GIL)."""
    todo = {}
    for split, folders in classes.items():
        for name, rel in folders.items():
            todo[(split, name)] = list(walker.files(rel))
            if not todo[(split, name)]:
                raise DataError(f"class folder {walker.root / rel} is empty (no image files)")
    jobs = [(key, src) for key, sources in todo.items() for src in sources]
    results = check_images(walker.root, [src for _, src in jobs], converted_dir)
    checked: dict[tuple[str, str], list[CheckedImage]] = {key: [] for key in todo}
    for (key, _), result in zip(jobs, results):
        checked[key].append(result)
    return checked


# --- splits ---------------------------------------------------------------------------------


def carve_splits(dataset: ImageDataset, split: SplitRule, validation_fraction: float,
                 test_fraction: float, seed: int) -> None:
    """Carves the missing splits of a folder dataset scanned with ``make_splits=False`` by
    ``split`` (a task's :meth:`~runway_cnn.tasks.base.Task.split`, or stratified by class):
    validation (and test) from the images, or validation from a given ``train/`` without a
    ``validation/``; a class too small for the splits, or missing from one, is a one-line
    error naming its folder."""
    layout, given = dataset.split_settings["layout"], dataset.splits
    grouping = dataset.split_settings.get("grouping")
    settings = {"layout": layout, "validation_fraction": validation_fraction, "seed": seed,
                "given_splits": list(given) if layout == "split folders" else []}
    if layout == "split folders" and "validation" in given:
        dataset.split_settings = {**settings, **({"grouping": grouping} if grouping else {})}
        return
    if layout == "split folders":
        fractions = (validation_fraction, 0.0)
    else:
        fractions = (validation_fraction, test_fraction)
        settings["test_fraction"] = test_fraction
    carve_from = given["train"]
    want = ("train", "validation") + (("test",) if fractions[1] > 0 else ())
    where = dataset.root / ("train" if layout == "split folders" else "")
    counts = dataset.count_labels(carve_from.targets)
    check_label_counts(counts, want, lambda label: f"class folder {where / label}",
                       "add images to it, or remove it")
    try:
        index = split(carve_from.targets, *fractions, seed, groups=carve_from.groups)
    except TooFewGroups as e:
        raise too_few_groups(e, grouping["group_by"], carve_from.groups) from None
    except ValueError as e:
        raise DataError(f"cannot split {where} stratified{' by group' if grouping else ''} "
                        f"({e}); add images or change validation_fraction / test_fraction"
                        ) from None
    splits = dict(given)
    for name, idx in index.items():
        splits[name] = carve_from.subset(idx)
    check_labels_reached(counts, {name: dataset.count_labels(splits[name].targets)
                                  for name in index}, str(where), grouped=bool(grouping))
    dataset.splits = {s: splits[s] for s in SPLITS if s in splits}
    if grouping:
        settings["grouping"] = {**grouping, **describe_split_groups(dataset.splits)}
    dataset.split_settings = settings


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir gives undecodable bytes as surrogates
        return False
    return True


def _by_path(d: dict) -> str:
    return d["path"]
