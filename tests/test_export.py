"""The TF Serving export: every signature reloads in a fresh process, saved_model_cli lists them,
the warm-up file replays, bad inputs give the documented errors, versions are pruned, and a
re-export (CLI, with TFLite) answers as the original."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from runway_cnn.export import __main__ as export_cli
from runway_cnn.export import reexport, saved_model, tflite, warmup
from runway_cnn.errors import CheckpointError, RunwayError
from runway_cnn.training.restore import restore_run, run_split
from serving_fixtures import CLASSES, bad_inputs, sample_images, shared_run

SIGNATURES = ("serving_default", "serving_per_image", "predict_images", "embed",
              "feature_vector")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def reexported(run, tmp_path_factory):
    """``python -m runway_cnn.export --tflite --keep_versions 2`` (its ``main``, in this process:
    a subprocess would only add a TensorFlow import) into a base already holding versions 1 and 2
    (stand-ins with an export's files: only those are pruned): it writes version 3 and prunes
    1. Returns the base and what it printed."""
    base = tmp_path_factory.mktemp("reexport")
    for version in ("1", "2"):
        (base / "looks" / version / "assets").mkdir(parents=True)
        (base / "looks" / version / "saved_model.pb").write_bytes(b"stand-in")
        (base / "looks" / version / "assets" / "runway_cnn.json").write_text("{}")
    (base / "looks" / "1.float.tflite").write_bytes(b"stand-in")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        export_cli.main(["--train_dir", str(run.train_dir), "--export_dir", str(base),
                     "--keep_versions", "2", "--tflite"])
    return base, printed.getvalue()


def test_reexport_cli_writes_the_next_version_and_prunes(reexported):
    base, stdout = reexported
    assert f"export: {base / 'looks' / '3'}" in stdout
    assert f"pruned: {base / 'looks' / '1'}" in stdout
    assert sorted(p.name for p in (base / "looks").iterdir()) == [
        "2", "3", "3.dynamic_range.tflite", "3.float.tflite"]


def test_export_layout_is_what_tf_serving_watches(run):
    version = run.export_path
    assert version.name == "1" and version.parent.name == "looks"
    for name in ("saved_model.pb", "variables/variables.index", "assets/labels.txt",
                 "assets/runway_cnn.json", "assets.extra/tf_serving_warmup_requests"):
        assert (version / name).is_file(), name
    assert (version / "assets" / "labels.txt").read_text().split() == list(CLASSES)
    meta = json.loads((version / "assets" / "runway_cnn.json").read_text())
    assert meta["signatures"]["per_image_errors"] == "serving_per_image"
    assert not [p for p in version.parent.iterdir() if p.name.startswith(".tmp")]
    umask = os.umask(0)
    os.umask(umask)
    assert version.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700


@pytest.fixture(scope="module")
def fresh_process(run, reexported):
    """One new Python process: plain ``tf.saved_model.load`` of the original export and of the
    re-export, every signature called, every warm-up record replayed against the signature it
    names; then ``saved_model_cli show --all`` of the export (the console script's entry point,
    run in the same process to spare a third TensorFlow import). Returns (report, cli output)."""
    files = [str(p) for p in sample_images(run)]
    script = textwrap.dedent(f"""
        import json, sys, numpy as np, tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2
        files = {files!r}
        data = [open(f, "rb").read() for f in files]
        report = {{}}
        for name, path in (("original", {str(run.export_path)!r}),
                           ("reexport", {str(reexported[0] / "looks" / "3")!r})):
            m = tf.saved_model.load(path)
            out = {{}}
            out["signatures"] = sorted(m.signatures.keys())
            b = tf.constant(data)
            strict = m.signatures["serving_default"](image_bytes=b)
            lenient = m.signatures["serving_per_image"](image_bytes=b)
            images = tf.random.stateless_uniform([2, 32, 32, 3], [1, 2])
            out["probabilities"] = strict["probabilities"].numpy().tolist()
            out["classes"] = [[c.decode() for c in r] for r in strict["classes"].numpy()]
            out["lenient_same"] = bool(np.allclose(lenient["probabilities"],
                                                   strict["probabilities"]))
            out["valid"] = lenient["valid"].numpy().tolist()
            out["images"] = m.signatures["predict_images"](images=images)[
                "probabilities"].numpy().tolist()
            out["embed"] = list(m.signatures["embed"](image_bytes=b)["embedding"].shape)
            fv = m.signatures["feature_vector"](images=images)
            out["feature_vector"] = [list(v.shape) for v in fv.values()]
            replayed = []
            warmup = path + "/assets.extra/tf_serving_warmup_requests"
            for record in tf.data.TFRecordDataset(warmup):
                log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
                request = log.predict_log.request
                inputs = {{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}}
                result = m.signatures[request.model_spec.signature_name](**inputs)
                replayed.append([request.model_spec.name, request.model_spec.signature_name,
                                 sorted(result), int(next(iter(inputs.values())).shape[0])])
            out["warmup"] = replayed
            report[name] = out
        print("REPORT " + json.dumps(report), flush=True)
        from tensorflow.python.tools import saved_model_cli
        sys.argv = ["saved_model_cli", "show", "--dir", {str(run.export_path)!r}, "--all"]
        saved_model_cli.main()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    head, _, cli_text = done.stdout.partition("\n")
    assert head.startswith("REPORT "), done.stdout[:2000]
    return json.loads(head[len("REPORT "):]), cli_text


def test_every_signature_of_both_exports_runs_in_a_fresh_process(run, fresh_process):
    """The re-export from the train dir gives the original export's probabilities."""
    report, _ = fresh_process
    files = sample_images(run)
    original, again = report["original"], report["reexport"]
    for out in (original, again):
        assert set(SIGNATURES) <= set(out["signatures"])
        assert out["lenient_same"] and out["valid"] == [True] * len(files)
        assert out["embed"] == [len(files), 16]
        assert out["feature_vector"] == [[2, 16]]
        assert [row[:2] for row in out["warmup"]] == [
            ["looks", "serving_default"], ["looks", "serving_default"],
            ["looks", "serving_per_image"], ["looks", "embed"]]
        assert [row[3] for row in out["warmup"]] == [1, 8, 1, 1]
        assert out["warmup"][2][2] == ["classes", "probabilities", "scores", "valid"]
        assert all(len(row) == 3 and set(row) <= set(CLASSES) for row in out["classes"])
    np.testing.assert_allclose(again["probabilities"], original["probabilities"], atol=1e-6)
    np.testing.assert_allclose(again["images"], original["images"], atol=1e-6)
    expected = run.task.probabilities(np.asarray(run.model(
        np.asarray(tf.random.stateless_uniform([2, 32, 32, 3], [1, 2])))))
    np.testing.assert_allclose(original["images"], expected, atol=1e-5)


def test_saved_model_cli_lists_every_signature(fresh_process):
    assert shutil.which("saved_model_cli"), "saved_model_cli ships with tensorflow"
    _, text = fresh_process
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in text
    default = text.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['image_bytes']" in default and "DT_STRING" in default
    assert "outputs['classes']" in default and "outputs['probabilities']" in default
    per_image = text.split("signature_def['serving_per_image']")[1].split("signature_def[")[0]
    assert re.search(r"outputs\['valid'\] tensor_info:\s+dtype: DT_BOOL", per_image)


def test_warmup_records_are_prediction_logs_and_need_no_serving_api():
    from tensorflow_serving.apis import prediction_log_pb2

    records = warmup.warmup_requests("looks", 32)
    log = prediction_log_pb2.PredictionLog.FromString(records[1])
    request = log.predict_log.request
    assert request.model_spec.name == "looks"
    assert request.model_spec.signature_name == "serving_default"
    tensor = request.inputs["image_bytes"]
    assert tensor.dtype == tf.string.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [8]
    assert tf.io.decode_jpeg(tensor.string_val[0]).shape == (40, 48, 3)
    # the hand-written encoding used without tensorflow-serving-api is the same bytes
    image = warmup.warmup_image(32)
    tensors = {"image_bytes": tf.make_tensor_proto([image] * 3, tf.string).SerializeToString()}
    assert warmup._encode_prediction_log("looks", "embed", tensors) == \
        warmup.predict_log_record("looks", "embed", {"image_bytes": [image] * 3})


@pytest.fixture(scope="module")
def loaded(run):
    return tf.saved_model.load(str(run.export_path))


def test_bad_inputs_fail_the_batch_with_invalid_argument(run, loaded):
    good = sample_images(run)[0].read_bytes()
    messages = {"text": "Unknown image file format", "empty": "Input is empty",
                "truncated": "Invalid JPEG data"}
    for name, bad in bad_inputs(good).items():
        for signature in ("serving_default", "embed"):
            with pytest.raises(tf.errors.InvalidArgumentError, match=messages[name]):
                loaded.signatures[signature](image_bytes=tf.constant([good, bad]))
    # the model is not harmed: the next request is answered
    ok = loaded.signatures["serving_default"](image_bytes=tf.constant([good]))
    assert ok["classes"].shape == (1, 3)


def test_per_image_signature_marks_bad_inputs_and_keeps_the_rest(run, loaded):
    files = sample_images(run)
    goods = [f.read_bytes() for f in files[:2]]
    bad = bad_inputs(goods[0])
    batch = [goods[0], bad["text"], bad["empty"], goods[1], bad["truncated"]]
    out = {k: v.numpy() for k, v in loaded.signatures["serving_per_image"](
        image_bytes=tf.constant(batch)).items()}
    assert out["valid"].tolist() == [True, False, False, True, False]
    alone = loaded.signatures["serving_default"](image_bytes=tf.constant(goods))
    np.testing.assert_allclose(out["probabilities"][[0, 3]], alone["probabilities"], atol=1e-6)
    assert out["classes"][[0, 3]].tolist() == alone["classes"].numpy().tolist()
    assert not out["probabilities"][[1, 2, 4]].any() and not out["scores"][[1, 2, 4]].any()
    assert set(out["classes"][[1, 2, 4]].ravel()) == {b""}
    nothing = loaded.signatures["serving_per_image"](image_bytes=tf.constant([bad["text"]]))
    assert nothing["valid"].numpy().tolist() == [False]
    assert nothing["probabilities"].shape == (1, len(CLASSES))


def test_tflite_files_agree_with_the_saved_model(run, reexported):
    base, stdout = reexported
    lines = {m.group(1): m for m in re.finditer(
        r"tflite (float|dynamic_range)\s+([\d.]+) MB\s+agreement with the SavedModel\s+"
        r"([\d.]+)% \((\d+) validation images", stdout)}
    assert set(lines) == {"float", "dynamic_range"}, stdout
    assert float(lines["float"].group(3)) == 100.0
    assert float(lines["dynamic_range"].group(3)) >= 75.0
    assert int(lines["float"].group(4)) == len(run.metrics["task"]["labels"]) * 2
    float_path = base / "looks" / "3.float.tflite"
    quantised = base / "looks" / "3.dynamic_range.tflite"
    assert quantised.stat().st_size < float_path.stat().st_size
    images = np.asarray(tf.random.stateless_uniform([3, 32, 32, 3], [3, 4]))
    expected = run.task.probabilities(np.asarray(run.model(images)))
    np.testing.assert_allclose(tflite.tflite_probabilities(float_path, images), expected,
                               atol=1e-5)
    np.testing.assert_allclose(tflite.tflite_probabilities(quantised, images), expected,
                               atol=0.05)


def test_prune_versions(tmp_path):
    model_dir = tmp_path / "looks"
    for version in (1, 2, 10, 11):  # stand-ins with an export's files: only those are pruned
        (model_dir / str(version) / "assets").mkdir(parents=True)
        (model_dir / str(version) / "saved_model.pb").write_bytes(b"stand-in")
        (model_dir / str(version) / "assets" / "runway_cnn.json").write_text("{}")
    (model_dir / "2.float.tflite").write_bytes(b"x")
    (model_dir / "11.float.tflite").write_bytes(b"x")
    (model_dir / "models.config").write_text("kept")
    removed = saved_model.prune_versions(model_dir, 2)
    assert [p.name for p in removed] == ["1", "2"]
    assert sorted(p.name for p in model_dir.iterdir()) == ["10", "11", "11.float.tflite",
                                                           "models.config"]
    assert saved_model.prune_versions(model_dir, 5) == []
    with pytest.raises(RunwayError, match="keep at least 1"):
        saved_model.prune_versions(model_dir, 0)


def test_restore_run_rebuilds_the_trained_model(run):
    restored = restore_run(run.train_dir)
    images = np.asarray(tf.random.stateless_uniform([2, 32, 32, 3], [5, 6]))
    np.testing.assert_allclose(np.asarray(restored.model(images)), np.asarray(run.model(images)),
                               atol=1e-6)
    assert restored.serving_name == "looks"
    assert restored.export_base == run.export_path.parent.parent
    validation = run_split(restored.train_dir, "validation")
    assert len(validation) == 8 and all(os.path.isfile(p) for p in validation.paths)


def test_reexport_of_an_unfinished_run_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="config.json not found"):
        reexport.reexport(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_name": "mobilenet_v2"}))
    with pytest.raises(CheckpointError, match="has not finished"):
        reexport.reexport(tmp_path)
