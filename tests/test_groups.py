"""Splits by group (``--group_by``): photos of one show, shoot or product never land in two
splits, for every task and every split maker; what a grouped split cannot do is said."""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from conftest import make_image_folder
from runway_cnn import FinetuneConfig
from runway_cnn.data.folders import scan_image_folder, write_run_files
from runway_cnn.data.groups import GroupBy
from runway_cnn.errors import DataError, RunwayError
from runway_cnn.tasks import AttributeTask, MultiLabelTask, SingleLabelTask
from runway_cnn.training.datasets import load_dataset
from runway_cnn.training.experiments import plan_runs


def shows(seed: int = 0, classes: int = 8, single: int = 2):
    """Single-label targets and group keys: ``single`` classes in one show each, the others in
    2–5 shows of 4–20 looks."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for c in range(classes):
        for show in range(1 if c < single else int(rng.integers(2, 6))):
            n = int(rng.integers(4, 21))
            labels += [c] * n
            groups += [f"brand{c}/season{show}"] * n
    return np.array(labels), np.array(groups, dtype=object)


def tasks_and_targets(labels: np.ndarray):
    """Each task with targets derived from the same images (so groups mean the same)."""
    rng = np.random.default_rng(1)
    tags = [f"t{i}" for i in range(6)]
    multi = np.zeros((len(labels), len(tags)), np.float32)
    multi[np.arange(len(labels)), labels % len(tags)] = 1
    multi[rng.random((len(labels), len(tags))) < 0.15] = 1
    attributes = np.stack([labels % 2, labels % 3], 1)
    attributes[rng.random(len(labels)) < 0.1, 1] = -1
    return [(SingleLabelTask([f"c{i}" for i in range(labels.max() + 1)]), labels),
            (MultiLabelTask(tags), multi),
            (AttributeTask(["a=p", "a=q", "b=x", "b=y", "b=z"]), attributes)]


def assert_no_shared_group(split: dict[str, np.ndarray], groups: np.ndarray) -> None:
    members = {name: set(groups[idx].tolist()) for name, idx in split.items()}
    for a in members:
        for b in members:
            assert a == b or not members[a] & members[b], (a, b, members[a] & members[b])
    every = np.concatenate(list(split.values()))
    assert len(every) == len(set(every.tolist()))  # no image in two splits


@pytest.mark.parametrize("task_index", [0, 1, 2], ids=["single_label", "multi_label",
                                                        "attributes"])
def test_no_group_is_in_two_splits_for_any_task_or_split_maker(task_index):
    labels, groups = shows()
    task, targets = tasks_and_targets(labels)[task_index]
    for seed in range(4):  # the plain split; --num_splits draws these with seed + i
        split = task.split(targets, 0.1, 0.1, seed, groups=groups)
        assert set(split) == {"train", "validation", "test"}
        assert all(len(idx) for idx in split.values())
        assert_no_shared_group(split, groups)
        assert sum(map(len, split.values())) == len(labels)  # nothing lost
    folds = task.kfold(targets, 3, seed=0, validation_fraction=0.1, groups=groups)
    assert len(folds) == 3
    for fold in folds:
        assert_no_shared_group(fold, groups)
    tested = np.concatenate([f["test"] for f in folds])
    assert len(tested) == len(set(tested.tolist()))  # each image tested at most once
    # without groups the same splitter mixes shows (the leak the grouping exists to stop)
    random = task.split(targets, 0.1, 0.1, 0)
    with pytest.raises(AssertionError):
        assert_no_shared_group(random, groups)


def test_experiment_plans_keep_groups_apart():
    labels, groups = shows(seed=3)
    task = SingleLabelTask([f"c{i}" for i in range(labels.max() + 1)])
    for flags in (dict(num_splits=3), dict(kfold=3)):
        config = FinetuneConfig(dataset_dir=".", group_by="x", **flags)
        plans = plan_runs(config, task, labels, groups)
        assert len(plans) == 3
        for plan in plans:
            assert_no_shared_group(plan.indices, groups)
        assert len({tuple(p.indices["test"]) for p in plans}) == 3  # the runs differ


def test_a_class_of_one_group_is_trained_on_never_tested_and_every_class_is_trained():
    labels, groups = shows(single=3)
    for seed in range(5):
        split = SingleLabelTask([f"c{i}" for i in range(8)]).split(labels, 0.2, 0.2, seed,
                                                                   groups=groups)
        assert set(labels[split["train"]].tolist()) == set(range(8))
        held_out = set(labels[split["validation"]].tolist()) | set(labels[split["test"]].tolist())
        assert held_out.isdisjoint({0, 1, 2})  # one show each: training only
        assert set(labels[split["test"]].tolist()) == set(range(3, 8))  # every other class tested


def test_folder_scan_splits_by_pattern_and_says_what_it_did(tmp_path):
    root = tmp_path / "runway"
    for season in ("Fall24", "Spring25", "Fall25"):  # three shows per brand, 4 looks each
        make_image_folder(root, ["chanel", "dior", "prada"], per_class=4, size=(24, 32),
                          seed=len(season))
        for folder in root.iterdir():
            for image in folder.glob(f"{folder.name}_*.jpg"):
                image.rename(folder / f"{season}_look_{image.stem[-3:]}.jpg")
    make_image_folder(root, ["margiela"], per_class=6, size=(24, 32))  # one show
    for image in (root / "margiela").glob("*.jpg"):
        image.rename(root / "margiela" / f"Fall24_look_{image.stem[-3:]}.jpg")
    dataset = scan_image_folder(root, validation_fraction=0.2, test_fraction=0.2, seed=0,
                                group_by=r"^([^/]+/[A-Za-z]+[0-9]+)_")
    show = {name: {s.split("_")[0] for s in split.sources}
            for name, split in dataset.splits.items()}
    assert not show["train"] & show["test"] and not show["train"] & show["validation"]
    assert not show["validation"] & show["test"]
    grouping = dataset.split_settings["grouping"]
    assert grouping["groups"] == 10 and grouping["groups_in_several_splits"] == 0
    assert dataset.labels_only_in_training() == ["margiela"]
    assert "margiela" in dataset.summary_line() and "none in two splits" in \
        dataset.summary_line()
    write_run_files(dataset, tmp_path / "run")
    items = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert {item["group"] for item in items["test"]} <= {
        f"{b}/{s}" for b in ("chanel", "dior", "prada") for s in ("Fall24", "Spring25", "Fall25")}
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["labels_only_in_training"] == ["margiela"]
    assert report["split_settings"]["grouping"]["group_by"] == r"^([^/]+/[A-Za-z]+[0-9]+)_"


def test_given_split_folders_that_share_a_group_are_counted(tmp_path):
    root = make_image_folder(tmp_path / "given", ["a", "b"], per_class=3, size=(24, 32),
                             splits=["train", "validation"])
    dataset = scan_image_folder(root, group_by="folder:1")  # the class folder: one group each
    grouping = dataset.split_settings["grouping"]
    assert grouping["groups_in_several_splits"] == 0  # train/a and validation/a differ
    dataset = scan_image_folder(root, group_by=r"/([a-z])/")  # the class, across splits
    grouping = dataset.split_settings["grouping"]
    assert grouping["groups_in_several_splits"] == 2
    assert "2 of them in two or more of the given splits" in dataset.summary_line()


def _csv_dataset(tmp_path, cells):
    photos = make_image_folder(tmp_path / "photos", ["red", "blue"], per_class=12,
                               size=(24, 32))
    rows = [(f"{c}/{c}_{i:03d}.jpg", c, cells(c, i)) for c in ("red", "blue") for i in range(12)]
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label", "product"])
        writer.writerows(rows)
    return photos, tmp_path / "labels.csv"


def test_csv_group_column_keeps_a_products_views_together(tmp_path):
    photos, labels_csv = _csv_dataset(tmp_path, lambda c, i: f"{c}-sku{i // 3}")
    config = FinetuneConfig(dataset_dir=str(photos), labels_csv=str(labels_csv),
                            group_by="column:product", validation_fraction=0.25,
                            test_fraction=0.25, train_dir=str(tmp_path / "run"))
    dataset, _ = load_dataset(config, tmp_path / "work")
    product = {row[0]: row[2] for row in csv.reader(labels_csv.open())}
    members = {name: {product[s] for s in split.sources} for name, split in
               dataset.splits.items()}
    assert all(len(members[a] & members[b]) == 0 for a in members for b in members if a < b)
    assert dataset.split_settings["grouping"]["groups"] == 8


def test_bad_group_specs_are_one_clear_line_or_a_counted_note(tmp_path):
    photos, labels_csv = _csv_dataset(tmp_path, lambda c, i: "" if i % 4 == 0 else f"{c}{i // 2}")

    def load(**flags):
        config = FinetuneConfig(dataset_dir=str(photos), train_dir=str(tmp_path / "run"),
                                validation_fraction=0.25, test_fraction=0.25, **flags)
        return load_dataset(config, tmp_path / "work")[0]

    cases = [(dict(group_by=r"^season(\d+)_"), "matches no file path"),
             (dict(group_by="(unclosed"), "not a regular expression"),
             (dict(group_by="folder:0"), "folder:N needs a whole number"),
             (dict(group_by="column:show", labels_csv=str(labels_csv)), "no 'show' column")]
    for flags, message in cases:
        with pytest.raises(DataError, match=message) as error:
            load(**flags)
        assert "\n" not in str(error.value)
    dataset = load(group_by="column:product", labels_csv=str(labels_csv))  # 6 empty cells
    grouping = dataset.split_settings["grouping"]
    assert grouping["files_in_a_group_of_their_own"] == 6
    assert grouping["groups"] == 6 + 2 * 6
    empty = {f"{c}/{c}_{i:03d}.jpg" for c in ("red", "blue") for i in (0, 4, 8)}
    assert len(grouping["examples_in_a_group_of_their_own"]) == 5
    assert set(grouping["examples_in_a_group_of_their_own"]) <= empty


def test_too_few_groups_to_split_is_one_line(tmp_path):
    root = make_image_folder(tmp_path / "two", ["a", "b"], per_class=6, size=(24, 32))
    with pytest.raises(DataError, match="by group") as error:
        scan_image_folder(root, group_by="folder")  # one group per class: nothing to hold out
    assert "\n" not in str(error.value)


def test_group_keys_of_each_spec():
    sources = ["chanel/Fall24_look_001.jpg", "chanel/Fall24_look_002.jpg",
               "chanel/sub/Spring25_look_001.jpg", "dior/odd.jpg"]
    keys, alone = GroupBy(r"^([^/]+/[A-Za-z]+[0-9]+)_").keys(sources)
    assert keys[:2].tolist() == ["chanel/Fall24", "chanel/Fall24"]
    assert alone == sources[2:]  # unmatched: a group of its own each
    assert len(set(keys.tolist())) == 3
    assert GroupBy("folder").keys(sources)[0].tolist() == ["chanel", "chanel", "chanel/sub",
                                                            "dior"]
    assert GroupBy("folder:1").keys(sources)[0].tolist() == ["chanel"] * 3 + ["dior"]
    assert GroupBy("look").keys(sources)[0][0] == "look"  # no group: the whole match


# --- leaks across splits ------------------------------------------------------------------------

def test_leak_check_counts_near_duplicates_and_suggests_a_grouping():
    from runway_cnn.data.leaks import check_split_leaks, warning_line

    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 32))
    distinct = rng.normal(size=(10, 32))
    copies = train[:6] + rng.normal(scale=0.05, size=(6, 32))  # near copies of 6 training photos
    train_sources = [f"brand{i % 4}/Fall{20 + i % 5}_look_{i:03d}.jpg" for i in range(40)]
    held_sources = [f"brand{i % 4}/Fall{20 + i % 5}_look_{100 + i:03d}.jpg" for i in range(6)] \
        + [f"brand{i % 4}/Spring{i}_look_{i:03d}.jpg" for i in range(10)]
    leaks = check_split_leaks({"train": train, "test": np.vstack([copies, distinct])},
                              {"train": train_sources, "test": held_sources}, grouped=False,
                              num_labels=4)
    assert leaks["near_duplicates"] == {"test": 6} and leaks["checked"] == {"test": 16}
    assert {e["held_out"] for e in leaks["examples"]} <= set(held_sources[:6])
    assert leaks["warn"] and leaks["suggested_group_by"] == r"^(.*/[A-Za-z]+[0-9]+)[_\-. ]"
    line = warning_line(leaks)
    assert line.startswith("warning: 6 of 16 validation/test photos") and "\n" not in line
    assert "--group_by '^(.*/[A-Za-z]+[0-9]+)[_\\-. ]'" in line
    quiet = check_split_leaks({"train": train, "test": distinct},
                              {"train": train_sources, "test": held_sources[6:]}, grouped=False)
    assert quiet["near_duplicates"] == {"test": 0} and warning_line(quiet) is None


def _planted_copies(image: np.ndarray) -> list[np.ndarray]:
    """A photo as scrapers copy it: re-encoded (JPEG quality 30), resized to 60 %, mirrored and
    cropped by 5 % a side."""
    import io

    from PIL import Image, ImageOps

    photo = Image.fromarray(image)
    encoded = io.BytesIO()
    photo.save(encoded, "JPEG", quality=30)
    h, w = image.shape[:2]
    return [np.asarray(Image.open(encoded).convert("RGB")),
            np.asarray(photo.resize((w * 3 // 5, h * 3 // 5))),
            np.asarray(ImageOps.mirror(photo)),
            image[h // 20:h - h // 20, w // 20:w - w // 20]]


def test_the_near_duplicate_threshold_finds_every_planted_copy_and_no_distinct_photo():
    """Real photos that ship with scikit-image / scikit-learn through the real ImageNet
    EfficientNet-Lite0: every planted copy of a training photo is found, no other photo is."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    from runway_cnn.backbones import checkpoints
    from runway_cnn.data.leaks import NEAR_DUPLICATE_COSINE, check_split_leaks

    photos = {name: getattr(data, name)() for name in (
        "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
        "immunohistochemistry")}
    photos |= {name: load_sample_image(f"{name}.jpg") for name in ("china", "flower")}
    model = checkpoints.feature_model(checkpoints.load_keras_model("efficientnet_lite0"))

    def features(images):
        crops = np.stack([checkpoints.center_crop(image, 224) for image in images])
        return np.asarray(model(crops, training=False))

    trained, unseen = list(photos)[:6], list(photos)[6:]
    held_out = [(f"{name}:copy{i}", copy) for name in trained
                for i, copy in enumerate(_planted_copies(photos[name]))]
    held_out += [(name, photos[name]) for name in unseen]
    leaks = check_split_leaks(
        {"train": features([photos[n] for n in trained]),
         "test": features([image for _, image in held_out])},
        {"train": trained, "test": [name for name, _ in held_out]}, grouped=False)
    found = {example["held_out"] for example in leaks["examples"]}
    assert leaks["near_duplicates"] == {"test": 4 * len(trained)}, leaks  # recall 1
    assert len(found) == 5 and not found & set(unseen)  # precision 1 (examples are 5 of them)
    assert all(e["held_out"].split(":")[0] == e["train"] for e in leaks["examples"])
    assert leaks["threshold"] == NEAR_DUPLICATE_COSINE


@pytest.fixture(scope="module")
def show_folder(tmp_path_factory):
    """4 brands × 3 shows × 4 looks (``brand/ShowN_look_i.jpg``) and the tiny backbone."""
    from tiny_models import make_tiny_hub_module

    root = tmp_path_factory.mktemp("shows")
    looks = root / "looks"
    for show in range(3):
        part = make_image_folder(root / f"show{show}", ["a", "b", "c", "d"], per_class=4,
                                 size=(32, 48), seed=show)
        for image in part.glob("*/*.jpg"):
            target = looks / image.parent.name / f"Show{show}_look_{image.stem[-3:]}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            image.rename(target)
    return root, looks, make_tiny_hub_module(root / "hub")


def test_an_experiment_compares_grouped_and_random_splits(show_folder, capsys):
    from runway_cnn.training.experiments import format_summary, run_experiment

    root, looks, hub = show_folder
    pattern = r"^([^/]+/Show[0-9]+)_"
    config = FinetuneConfig(dataset_dir=str(looks), train_dir=str(root / "exp"),
                            model_name=f"hub:{hub}", image_size=32, batch_size=8, stage2_epochs=0,
                            validation_fraction=0.2, test_fraction=0.2, verbose=0,
                            num_splits=2, group_by=pattern, compare_random_split=True)
    summary = run_experiment(config)
    assert summary["group_by"] == pattern and summary["runs_finished"] == 2
    compared = summary["random_split"]
    assert [r["run"] for r in compared["runs"]] == ["random_split_00", "random_split_01"]
    gap = compared["gap"]["top1"]
    assert gap == pytest.approx(compared["aggregate"]["top1"]["mean"]
                                - summary["aggregate"]["top1"]["mean"])
    for run, grouped in (("split_00", True), ("random_split_00", False)):
        splits = json.loads((root / "exp" / run / "splits.json").read_text())
        shows_of = {name: {item["group"] for item in items} for name, items in splits.items()}
        shared = shows_of["train"] & (shows_of["validation"] | shows_of["test"])
        assert (not shared) == grouped, run
        metrics = json.loads((root / "exp" / run / "metrics.json").read_text())
        assert metrics["leaks"]["grouped"] == grouped
        assert (metrics["grouping"] is not None) == grouped
    text = format_summary(summary)
    assert "the same protocol on random splits" in text and f"{abs(gap):.3f}" in text
    with pytest.raises(RunwayError, match="--compare_random_split True: compares") as error:
        FinetuneConfig(dataset_dir=str(looks), compare_random_split=True, num_splits=2)
    assert "\n" not in str(error.value)


def test_records_keep_each_images_group(show_folder, tmp_path):
    from runway_cnn.training.datasets import convert_dataset, read_records

    _, looks, _ = show_folder
    pattern = r"^([^/]+/Show[0-9]+)_"
    config = FinetuneConfig(dataset_dir=str(looks), train_dir=str(tmp_path / "unused"),
                            group_by=pattern, validation_fraction=0.25, test_fraction=0.25)
    folder, _ = load_dataset(config, tmp_path / "work")
    convert_dataset(tmp_path / "records", 2, config)
    records, descriptor = read_records(tmp_path / "records")
    assert descriptor["split_settings"]["grouping"]["group_by"] == pattern
    for name, split in records.splits.items():
        want = dict(zip(folder.splits[name].sources, folder.splits[name].groups.tolist()))
        assert dict(zip(split.sources, split.groups.tolist())) == want
    pool = records.pooled()
    task = SingleLabelTask(records.labels)
    folds = task.kfold(pool.targets, 2, seed=0, validation_fraction=0.2, groups=pool.groups)
    for fold in folds:
        assert_no_shared_group(fold, pool.groups)
    ungrouped = tmp_path / "plain"
    convert_dataset(ungrouped, 2, dataclasses.replace(config, group_by=None))
    with pytest.raises(DataError, match="converted without --group_by") as error:
        load_dataset(dataclasses.replace(config, dataset_dir=str(ungrouped)), tmp_path / "w2")
    assert "\n" not in str(error.value)


def test_datasets_convert_takes_group_by_as_the_advice_says(show_folder, tmp_path):
    """A grouped run on records converted without groups advises converting again with
    --group_by: ``datasets convert`` takes that flag and its records keep the groups."""
    from helpers import run_cli

    from runway_cnn import datasets as datasets_cli
    from runway_cnn.training.datasets import read_records

    _, looks, _ = show_folder
    pattern = r"^([^/]+/Show[0-9]+)_"
    code, out, err = run_cli(datasets_cli.main, [
        "convert", "--dataset_dir", str(looks), "--output_dir", str(tmp_path / "records"),
        "--num_shards", "1", "--group_by", pattern, "--validation_fraction", "0.25",
        "--test_fraction", "0.25"])
    assert code == 0, err
    records, descriptor = read_records(tmp_path / "records")
    assert descriptor["split_settings"]["grouping"]["group_by"] == pattern
    assert "none in two splits" in out
    train = set(records.splits["train"].groups.tolist())
    assert train and not train & set(records.splits["test"].groups.tolist())


def test_a_grouping_too_coarse_says_how_many_groups_and_asks_for_a_finer_one(tmp_path):
    """One group per class leaves nothing to hold out: the error counts the groups and those
    needed and asks for a finer --group_by (it said to add images)."""
    root = make_image_folder(tmp_path / "two", ["a", "b"], per_class=6, size=(24, 32))
    with pytest.raises(DataError) as error:
        scan_image_folder(root, group_by="folder")
    message = str(error.value)
    assert "--group_by 'folder' makes 2 groups, too few" in message
    assert "2 or more needed" in message and "finer --group_by" in message
    assert "add images" not in message and "\n" not in message


def _priced_kinds(tmp_path):
    """A regression CSV dataset: 4 kinds of photo (``k<kind>_<i>.jpg``), 8 each, priced by
    kind, and the near-duplicate pairs a leak check finds (photos of one kind)."""
    from conftest import make_image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for kind in range(4):
        for i in range(8):
            make_image(kind, (24, 24), rng).save(photos / f"k{kind}_{i}.jpg")
            rows.append((f"k{kind}_{i}.jpg", f"{100 + 10 * kind + rng.normal():.3f}"))
    with (tmp_path / "prices.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("filename", "value"), *rows])
    return photos, tmp_path / "prices.csv", [name for name, _ in rows]


def test_a_leak_suggests_only_a_grouping_the_run_can_split_by_and_speaks_of_its_task(tmp_path):
    """A regression whose near-duplicates share a kind: grouping by kind makes 4 groups each of
    its own price range, which no split can hold out. The warning does not suggest it (it did,
    and that run failed), and the error of that grouping speaks of value ranges, not classes."""
    from runway_cnn.data.leaks import CANDIDATES, check_split_leaks
    from runway_cnn.tasks import RegressionTask

    photos, prices, sources = _priced_kinds(tmp_path)
    config = FinetuneConfig(dataset_dir=str(photos), labels_csv=str(prices), task="regression",
                            train_dir=str(tmp_path / "run"), validation_fraction=0.25,
                            test_fraction=0.25)
    dataset, task = load_dataset(config, tmp_path / "work")
    pool = dataset.pooled()
    rng = np.random.default_rng(1)
    kind_vectors = rng.normal(size=(4, 16))
    features = kind_vectors[[int(s[1]) for s in pool.sources]] + rng.normal(
        scale=0.01, size=(len(pool), 16))
    train = np.isin(pool.sources, dataset.splits["train"].sources)
    held_out = ~train

    def split(groups):
        return task.split(pool.targets, 0.25, 0.25, 0, groups=groups)

    leaks = check_split_leaks({"train": features[train], "test": features[held_out]},
                              {"train": list(np.array(pool.sources)[train]),
                               "test": list(np.array(pool.sources)[held_out])},
                              grouped=False, num_labels=1, split=split)
    assert leaks["warn"] and leaks["suggested_group_by"] is None
    by_kind = CANDIDATES[2]  # what it suggested: the name up to a separator, k0 … k3
    with pytest.raises(DataError) as error:
        load_dataset(dataclasses.replace(config, group_by=by_kind), tmp_path / "work")
    message = str(error.value)
    assert "makes 4 groups, too few" in message and "value range" in message
    assert "class" not in message and "finer --group_by" in message
    assert isinstance(task, RegressionTask) and "\n" not in message


def test_an_empty_capture_and_a_column_without_a_csv_are_named_as_such(tmp_path):
    """A pattern that matches every file but captures nothing is not one that matches none;
    ``column:NAME`` without ``--labels_csv`` has no column to read, not an empty one."""
    with pytest.raises(DataError, match=r"captured an empty group for file chanel/look_1\.jpg"):
        GroupBy(r"^chanel/(x*)look").keys(["chanel/look_1.jpg", "chanel/look_2.jpg"])
    with pytest.raises(DataError, match="matches no file path"):
        GroupBy(r"^dior/").keys(["chanel/look_1.jpg"])
    root = make_image_folder(tmp_path / "two", ["a", "b"], per_class=6, size=(24, 32))
    with pytest.raises(DataError, match=r"--group_by column:show needs --labels_csv") as error:
        scan_image_folder(root, group_by="column:show")
    assert "\n" not in str(error.value)
