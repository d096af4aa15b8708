"""The one rule for what a command may write (``runway_cnn.output_checks``): never inside an
input folder or over an input, never over a file the package did not write (or that was changed
since) without ``--overwrite``, checked on resolved paths; only the package's own exports are
pruned; unwritable, looping or dangling output paths are one line, never a traceback."""
from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest

from bad_input_corpus import snapshot
from conftest import make_image_folder
from helpers import assert_one_line_error, run_cli
from runway_cnn import FinetuneConfig, cli, fine_tune
from runway_cnn import datasets as datasets_cli
from runway_cnn import evaluate as evaluate_cli
from runway_cnn import finetune as finetune_cli
from runway_cnn import predict as predict_cli
from runway_cnn import serving as serving_cli
from runway_cnn.audit import __main__ as audit_cli
from runway_cnn.data.tfrecords import check_records_output
from runway_cnn.errors import RunwayError
from runway_cnn.export import __main__ as export_cli
from runway_cnn.export.saved_model import prune_versions
from runway_cnn.export_dir import META_FILE, next_version
from runway_cnn.inference.attribute_index import build_attribute_index, query_attribute_index
from runway_cnn.inference.retrieval import build_image_index, query_image_index
from runway_cnn.output_checks import check_own_output, record_written
from tiny_models import make_tiny_hub_module

CLASSES = ("checks", "circles", "hstripes", "vstripes")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run (stage 1 only) and its export, beside its dataset."""
    root = tmp_path_factory.mktemp("output_rule")
    dataset = make_image_folder(root / "looks", CLASSES, per_class=5, size=(40, 56))
    hub = make_tiny_hub_module(root / "hub")
    result = fine_tune(FinetuneConfig(
        dataset_dir=str(dataset), train_dir=str(root / "run"), model_name=f"hub:{hub}",
        image_size=32, batch_size=8, stage2_epochs=0, validation_fraction=0.25,
        test_fraction=0.25, verbose=0))
    return {"root": root, "dataset": dataset, "hub": hub, "result": result}


def _finetune(dataset: Path, hub: Path, *flags: str) -> tuple[int, str, str]:
    return run_cli(finetune_cli.main, [
        "--dataset_dir", str(dataset), "--model_name", f"hub:{hub}", "--image_size", "32",
        "--batch_size", "8", "--stage2_epochs", "0", "--verbose", "0", *flags])


# --- exports: the real folder, and pruning only what is ours ------------------------------------

def _fake_export(folder: Path) -> Path:
    (folder / "assets").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"pb")
    (folder / "assets" / META_FILE).write_text("{}")
    return folder


def test_pruning_deletes_only_the_packages_own_exports(tmp_path):
    """Class folders named ``1/`` and ``2/`` beside exports are a user's photos, not versions:
    ``--keep_versions`` never deletes them, and no version number is taken from them twice."""
    model_dir = tmp_path / "looks"
    make_image_folder(model_dir, ("1", "2"), per_class=2, size=(20, 20))
    (model_dir / "3").mkdir()  # another tool's SavedModel: served, never pruned by us
    (model_dir / "3" / "saved_model.pb").write_bytes(b"theirs")
    before = snapshot(model_dir)
    for version in (4, 5, 6):
        _fake_export(model_dir / str(version))
    pruned = prune_versions(model_dir, 1)
    assert pruned == [model_dir / "4", model_dir / "5"]
    assert not (model_dir / "4").exists() and (model_dir / "6" / "saved_model.pb").exists()
    assert {k: v for k, v in snapshot(model_dir).items() if k in before} == before
    assert next_version(model_dir) == 7
    (model_dir / "7").mkdir()  # a numbered folder that is no export still takes its number
    assert next_version(model_dir) == 8


@pytest.mark.parametrize("flags", [
    ("--export_dir", "{parent}"),  # the serving name defaults to the dataset's: the dataset
    ("--export_dir", "{parent}/exports", "--serving_name", "../looks"),
    ("--serving_name", "{dataset}"),  # an absolute serving name
], ids=["export_dir_is_the_datasets_parent", "serving_name_dotdot", "serving_name_absolute"])
def test_an_export_folder_in_the_dataset_is_refused_before_training(tmp_path, run, flags):
    dataset = make_image_folder(tmp_path / "looks", CLASSES, per_class=4, size=(24, 24))
    before = snapshot(dataset)
    flags = [f.format(parent=tmp_path, dataset=dataset) for f in flags]
    code, _, err = _finetune(dataset, run["hub"], "--train_dir", str(tmp_path / "run"), *flags)
    assert_one_line_error(code, err)
    assert "--serving_name" in err, err
    assert snapshot(dataset) == before
    assert not (tmp_path / "run" / "stage1").exists()  # refused before any training


def test_an_export_base_may_hold_the_dataset_when_the_export_folder_is_elsewhere(tmp_path):
    dataset = make_image_folder(tmp_path / "looks", CLASSES, per_class=1, size=(20, 20))
    FinetuneConfig(dataset_dir=str(dataset), train_dir=str(tmp_path / "run"),
                   export_dir=str(tmp_path), serving_name="brands").check_outputs()
    with pytest.raises(RunwayError, match="--export_dir .* is inside --dataset_dir"):
        FinetuneConfig(dataset_dir=str(dataset), train_dir=str(tmp_path / "run"),
                       export_dir=str(dataset / "x"), serving_name="brands").check_outputs()


def test_a_registered_datasets_folder_is_the_input_checked(tmp_path, monkeypatch):
    """``--dataset_dir clothing_sample`` (the README's main job) names the shipped folder: that
    folder is what outputs are kept out of."""
    from runway_cnn.data.folders import DATASETS

    sample = DATASETS.get("clothing_sample")
    config = FinetuneConfig(dataset_dir="clothing_sample", train_dir=str(tmp_path / "run"))
    assert ("--dataset_dir", str(sample)) in config.inputs()
    config.check_outputs()
    monkeypatch.chdir(sample)  # the default runs/ under the photos: refused
    with pytest.raises(RunwayError, match="--train_dir .* inside --dataset_dir"):
        FinetuneConfig(dataset_dir="clothing_sample").check_outputs()
    assert not (sample / "runs").exists()


def test_reexport_into_the_dataset_is_refused(run):
    dataset = run["dataset"]
    before = snapshot(dataset)
    code, _, err = run_cli(export_cli.main, ["--train_dir", str(run["result"].train_dir),
                                             "--export_dir", str(dataset.parent),
                                             "--serving_name", dataset.name,
                                             "--keep_versions", "1"])
    assert_one_line_error(code, err, "--export_dir / --serving_name", "--dataset_dir")
    code, _, err = run_cli(export_cli.main, ["--train_dir", str(run["result"].train_dir),
                                             "--serving_name", "../x"])
    assert_one_line_error(code, err, "--serving_name")
    assert snapshot(dataset) == before


# --- outputs inside the data ----------------------------------------------------------------------

def test_evaluate_and_convert_refuse_an_output_inside_the_dataset(run, tmp_path):
    dataset = run["dataset"]
    before = snapshot(dataset)
    code, _, err = run_cli(evaluate_cli.main, [
        "--model", str(run["result"].export_path), "--dataset_dir", str(dataset),
        "--output_dir", str(dataset / "eval")])
    assert_one_line_error(code, err, "--output_dir", "inside --dataset_dir")
    code, _, err = run_cli(datasets_cli.main, [
        "convert", "--dataset_dir", str(dataset), "--output_dir", str(dataset / "records")])
    assert_one_line_error(code, err, "--output_dir", "inside --dataset_dir")
    link = tmp_path / "link"  # a link into the dataset is the dataset: resolved paths
    link.symlink_to(dataset)
    code, _, err = run_cli(audit_cli.main, ["--dataset_dir", str(dataset),
                                            "--output_dir", str(link / "audit")])
    assert_one_line_error(code, err, "--output_dir", "inside --dataset_dir")
    assert snapshot(dataset) == before


def test_an_index_is_never_built_inside_its_photos(run):
    dataset = run["dataset"]
    with pytest.raises(RunwayError, match="--output .* inside --images"):
        build_image_index(run["result"].export_path, dataset, dataset / "index")
    with pytest.raises(RunwayError, match="--output .* inside --catalog"):
        build_attribute_index(run["result"].export_path, dataset, dataset / "index")
    with pytest.raises(RunwayError, match="--output .* holds --images"):
        build_image_index(run["result"].export_path, dataset / CLASSES[0], dataset)
    assert not (dataset / "index").exists()


# --- never over an input, nor over a file the package did not write -------------------------

def test_predict_output_never_writes_over_an_input_or_a_users_file(run, tmp_path):
    photo = sorted(run["dataset"].rglob("*.jpg"))[0]
    model = str(run["result"].export_path)
    kept = photo.read_bytes()
    code, _, err = run_cli(predict_cli.main, ["--model", model, str(photo), "--output",
                                              str(photo), "--overwrite"])
    assert_one_line_error(code, err, "--output", "itself")
    code, _, err = run_cli(predict_cli.main, ["--model", model, str(photo.parent), "--output",
                                              str(photo)])
    assert_one_line_error(code, err, "--output", "inside IMAGE_OR_DIR")
    assert photo.read_bytes() == kept
    notes = tmp_path / "notes.csv"
    notes.write_text("a user's own file\n")
    code, _, err = run_cli(predict_cli.main, ["--model", model, str(photo), "--output",
                                              str(notes)])
    assert_one_line_error(code, err, "--output", "did not write")
    assert notes.read_text() == "a user's own file\n"
    argv = ["--model", model, str(photo), "--output", str(notes)]
    for extra in (["--overwrite"], []):  # then its own CSV is written again, unasked
        code, _, err = run_cli(predict_cli.main, argv + extra)
        assert code == 0, err
    with notes.open("a") as f:
        f.write("an edit\n")  # changed since it was written: the user's now
    code, _, err = run_cli(predict_cli.main, ["--model", model, str(photo), "--output",
                                              str(notes)])
    assert_one_line_error(code, err, "--output", "changed since")
    assert notes.read_text().endswith("an edit\n")


@pytest.mark.parametrize("query", [query_image_index, query_attribute_index])
def test_a_query_grid_never_writes_over_a_photo_or_a_users_file(query, tmp_path):
    photo = make_image_folder(tmp_path / "q", ("a",), per_class=1, size=(20, 20)) / "a"
    photo = next(photo.iterdir())
    kept = photo.read_bytes()
    with pytest.raises(RunwayError, match="--grid .* itself"):
        query(tmp_path / "no_index", [photo], grid=photo, overwrite=True)
    other = tmp_path / "mine.png"
    other.write_bytes(b"a user's picture")
    with pytest.raises(RunwayError, match="--grid .* did not write"):
        query(tmp_path / "no_index", [photo], grid=other)
    with pytest.raises(RunwayError, match="no_index"):  # --overwrite: on to reading the index
        query(tmp_path / "no_index", [photo], grid=other, overwrite=True)
    assert photo.read_bytes() == kept and other.read_bytes() == b"a user's picture"


def test_an_own_output_edited_by_hand_is_the_users(tmp_path):
    """``audit --fix`` run again must not replace a ``cleaned_labels.csv`` the user edited: a
    file the package recorded at write and that changed since counts as the user's."""
    out = tmp_path / "audit"
    out.mkdir()
    (out / "audit.json").write_text(json.dumps({"format": "f"}))
    fixed = out / "cleaned_labels.csv"
    fixed.write_text("file,label\na.jpg,x\n")
    record_written(fixed)
    check_own_output(out, "audit.json", "f", ("audit.json", "cleaned_labels.csv"))
    fixed.write_text("file,label\na.jpg,y\n")  # the same size: only the content tells
    with pytest.raises(RunwayError, match="changed since.*cleaned_labels.csv"):
        check_own_output(out, "audit.json", "f", ("audit.json", "cleaned_labels.csv"))


def test_audit_fix_never_replaces_a_manifest_edited_by_hand(tmp_path):
    from types import SimpleNamespace

    from runway_cnn.audit.run import AUDIT_JSON, FIXED_CSV, FORMAT, OWN_FILES, write_fix
    from runway_cnn.tasks import SingleLabelTask

    sources = ["coat/a.jpg", "coat/b.jpg", "dress/c.jpg"]
    audit = SimpleNamespace(sources=sources, split_of=[None] * 3, out=tmp_path,
                            config=SimpleNamespace(task="single_label", group_by=None),
                            task=SingleLabelTask(["coat", "dress"]),
                            pool=SimpleNamespace(raw_labels=["coat", "coat", "dress"],
                                                 groups=None))
    (tmp_path / AUDIT_JSON).write_text(json.dumps({"format": FORMAT}))
    write_fix(audit, {"exact_duplicates": [], "near_duplicates": {"pairs": []}, "notes": [],
                      "label_errors": []})
    check_own_output(tmp_path, AUDIT_JSON, FORMAT, OWN_FILES)  # its own: written again
    edited = (tmp_path / FIXED_CSV).read_text().replace("dress/c.jpg,dress", "dress/c.jpg,coat")
    (tmp_path / FIXED_CSV).write_text(edited)
    with pytest.raises(RunwayError, match=f"changed since.*{FIXED_CSV}"):
        check_own_output(tmp_path, AUDIT_JSON, FORMAT, OWN_FILES)


def test_serving_config_never_writes_over_a_users_file(run, tmp_path):
    base = run["result"].export_path.parent.parent
    mine = tmp_path / "models.config"
    mine.write_text("# a user's config\n")
    code, _, err = run_cli(serving_cli.main, ["config", "--export_dir", str(base),
                                              "--output", str(mine)])
    assert_one_line_error(code, err, "--output", "did not write")
    assert mine.read_text() == "# a user's config\n"
    code, _, err = run_cli(serving_cli.main, ["config", "--export_dir", str(base),
                                              "--output", str(mine), "--overwrite"])
    assert code == 0 and "model_config_list" in mine.read_text(), err


# --- system files, folders a run would take for its own, links, read-only folders ----------------

def test_system_files_do_not_make_a_folder_the_users(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (out / "Thumbs.db").write_bytes(b"x")
    (out / ".runway_cnn-write-test-x1").write_bytes(b"")  # another process's probe, gone soon
    check_own_output(out, "audit.json", "f", ("audit.json",))
    assert check_records_output(out, 2) == out.resolve()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunwayError, match="notes.txt"):
        check_own_output(out, "audit.json", "f", ("audit.json",))


def test_overwrite_never_lets_a_run_take_a_users_files_for_its_own(run, tmp_path):
    train_dir = tmp_path / "mine"
    train_dir.mkdir()
    files = {"model.weights.h5": "not HDF5", "metrics.json": '{"mine": 1}',
             "splits.json": '{"my": "splits"}'}
    for name, text in files.items():
        (train_dir / name).write_text(text)
    code, _, err = _finetune(run["dataset"], run["hub"], "--train_dir", str(train_dir),
                             "--overwrite")
    assert_one_line_error(code, err, "--train_dir", "metrics.json", "earlier run's state")
    assert {name: (train_dir / name).read_text() for name in files} == files
    assert sorted(p.name for p in train_dir.iterdir()) == sorted(files)


def test_a_looping_or_dangling_train_dir_link_is_one_line(run, tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    for link, words in ((loop, "loop"), (dangling, "broken symbolic link")):
        code, _, err = _finetune(run["dataset"], run["hub"], "--train_dir", str(link))
        assert_one_line_error(code, err, "--train_dir", words)
    assert not (tmp_path / "gone").exists()


@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` made immutable (``chattr +i``: refused to root too, unlike permission bits);
    the test is skipped where the file system cannot do that."""
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available on this file system")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_every_command_on_a_read_only_output_folder_is_one_line(run, tmp_path):
    model, dataset = str(run["result"].export_path), str(run["dataset"])
    photo = str(sorted(run["dataset"].rglob("*.jpg"))[0])
    with _read_only(tmp_path / "ro") as ro:
        commands = {
            "finetune": (finetune_cli.main, ["--dataset_dir", dataset, "--train_dir",
                                             str(ro / "run"), "--model_name",
                                             f"hub:{run['hub']}"]),
            "evaluate": (evaluate_cli.main, ["--model", model, "--dataset_dir", dataset,
                                             "--output_dir", str(ro / "eval")]),
            "predict": (predict_cli.main, ["--model", model, photo, "--output",
                                           str(ro / "p.csv")]),
            "audit": (audit_cli.main, ["--dataset_dir", dataset, "--output_dir",
                                       str(ro / "audit")]),
            "export": (export_cli.main, ["--train_dir", str(run["result"].train_dir),
                                         "--export_dir", str(ro / "exports")]),
            "datasets convert": (datasets_cli.main, ["convert", "--dataset_dir", dataset,
                                                     "--output_dir", str(ro / "records")]),
        }
        for name, (main, argv) in commands.items():
            code, _, err = run_cli(main, argv)
            assert_one_line_error(code, err, "cannot write", str(ro))
        assert list(ro.iterdir()) == []


def test_an_unwritable_file_met_mid_run_is_one_line():
    def main():
        raise PermissionError(13, "Permission denied", "/data/out/metrics.json")

    code, _, err = run_cli(lambda argv: main(), [])
    assert_one_line_error(code, err, "/data/out/metrics.json", "Permission denied")
    with pytest.raises(FileNotFoundError):  # not a user's folder: a bug stays a traceback
        cli.run(lambda: open("/no/such/file"))
