"""``--model_name`` as one spec for every weight source (a registry name, ``hub:``, ``keras:``,
``run:``), the older flags as its aliases, one-line errors for bad or conflicting sources, and
runs recorded by older versions still restoring and resuming."""
from __future__ import annotations

import json
import re
import shutil
import warnings

import numpy as np
import pytest
from conftest import make_image_folder
from helpers import assert_one_line_error, run_cli
from tiny_models import make_tiny_hub_module

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.backbones.factory import (
    ModelSpec,
    current_backbone_settings,
    get_backbone,
    model_spec,
    parse_model_spec,
)
from runway_cnn import finetune as finetune_cli
from runway_cnn.errors import (BackboneError, CheckpointError, RunwayDeprecationWarning,
                               UnknownNameError)

OLDER = pytest.mark.filterwarnings("ignore::runway_cnn.errors.RunwayDeprecationWarning")


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A directory and a weights file, named relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir").mkdir()
    (tmp_path / "w.weights.h5").write_bytes(b"")
    return tmp_path


def test_each_spec_form_parses_to_its_source(places):
    cases = {
        "mobilenet_v2": ModelSpec("registry", "mobilenet_v2"),
        "hub:dir": ModelSpec("hub", str(places / "dir")),
        "hub:https://tfhub.dev/google/imagenet/inception_v1/feature_vector/5": ModelSpec(
            "hub", "https://tfhub.dev/google/imagenet/inception_v1/feature_vector/5"),
        "keras:resnet50": ModelSpec("keras", "resnet50"),
        "keras:resnet50:w.weights.h5": ModelSpec("keras", "resnet50",
                                                 str(places / "w.weights.h5")),
        "run:dir": ModelSpec("run", str(places / "dir")),
    }
    for text, expected in cases.items():
        spec = parse_model_spec(text)
        assert spec == expected, text
        assert parse_model_spec(str(spec)) == spec  # the text a config records parses back


@OLDER  # their one deprecation line: test_an_older_flag_is_not_advertised_and_warns_once
def test_the_older_flags_are_aliases_of_the_spec(places):
    d, w = str(places / "dir"), "w.weights.h5"
    assert model_spec(hub_handle="dir") == model_spec("hub:dir") == (ModelSpec("hub", d),
                                                                     "default")
    assert model_spec(init_from="dir") == model_spec(init_from_run="dir") == \
        model_spec(init_from="dir", init_from_run=d) == model_spec("run:dir")
    assert model_spec("mobilenet_v2", w) == model_spec(f"keras:mobilenet_v2:{w}")
    assert model_spec("mobilenet_v2", "none") == (ModelSpec("registry", "mobilenet_v2"), "none")
    assert model_spec() == (ModelSpec("registry", "efficientnet_lite0"), "default")

    def recorded(**flags) -> dict:
        return FinetuneConfig(dataset_dir=str(places), **flags).to_dict()

    for old, new in ((dict(hub_handle="dir"), dict(model_name="hub:dir")),
                     (dict(init_from="dir"), dict(model_name="run:dir")),
                     (dict(init_from_run="dir"), dict(model_name="run:dir")),
                     (dict(model_name="resnet50", weights=w),
                      dict(model_name=f"keras:resnet50:{w}"))):
        assert recorded(**old) == recorded(**new), old
    assert recorded(hub_handle="dir")["model_name"] == f"hub:{d}"
    assert recorded(hub_handle="dir")["hub_handle"] is None  # one place names the backbone


def test_conflicting_sources_are_one_line_errors(places):
    base = ["--dataset_dir", str(places), "--train_dir", str(places / "t")]
    for flags, named in (
            (["--model_name", "mobilenet_v2", "--hub_handle", "dir"],
             ["--model_name mobilenet_v2", "--hub_handle dir", "exactly one"]),
            (["--model_name", "hub:dir", "--init_from", "dir"], ["--init_from dir"]),
            (["--init_from", "dir", "--init_from_run", "w.weights.h5"],
             ["--init_from dir", "--init_from_run w.weights.h5"]),
            (["--model_name", "keras:resnet50:w.weights.h5", "--weights", "imagenet"],
             ["--weights imagenet", "give one weights source"]),
            (["--model_name", "hub:dir", "--weights", "none"], ["--weights none"])):
        code, _, stderr = run_cli(finetune_cli.main, base + flags)
        assert_one_line_error(code, stderr, *named)
    assert not (places / "t").exists()
    assert model_spec("hub:dir", hub_handle="dir")[0] == ModelSpec("hub", str(places / "dir"))


def test_an_older_flag_is_not_advertised_and_warns_once(places):
    """``--hub_handle`` / ``--init_from`` / ``--init_from_run`` still work, as their
    ``--model_name`` spec, but are not in ``--help``; given, one warning line names the spec to
    give, once in a run (the command line) or a process (Python)."""
    code, usage, _ = run_cli(finetune_cli.parse_args, ["--help"])
    assert code == 0 and "--model_name" in usage
    assert not any(flag in usage for flag in ("--hub_handle", "--init_from", "--init_from_run"))
    base = ["--dataset_dir", str(places), "--train_dir", str(places / "t")]
    for flag, spec in (("hub_handle", "hub:dir"), ("init_from", "run:dir"),
                       ("init_from_run", "run:dir")):
        configs = []
        code, _, stderr = run_cli(lambda argv: configs.extend(
            finetune_cli.parse_args(argv) for _ in range(2)), base + [f"--{flag}", "dir"])
        assert code == 0, stderr
        assert [line for line in stderr.splitlines() if line.strip()] == [
            f"warning: --{flag} is deprecated: use --model_name {spec}"]
        assert configs[0].to_dict() == configs[1].to_dict() == finetune_cli.parse_args(
            base + ["--model_name", spec]).to_dict()
        with pytest.warns(RunwayDeprecationWarning, match=f"--{flag} is deprecated: use "
                                                          f"--model_name {spec}$"):
            assert FinetuneConfig(dataset_dir=str(places), **{flag: "dir"}).model_name == \
                str(parse_model_spec(spec))


def test_bad_specs_are_one_line_errors_naming_them(places):
    for text, error, named in (
            ("tfhub:dir", BackboneError, ["'tfhub:dir'", "not a backbone spec", "run:"]),
            ("hub:", BackboneError, ["'hub:'", "not a backbone spec"]),
            ("vgg99", UnknownNameError, ["unknown backbone 'vgg99'", "mobilenet_v2"]),
            ("keras:vgg99", UnknownNameError, ["unknown backbone 'vgg99'"]),
            ("keras:efficientnet_lite0", BackboneError, ["not a Keras application"]),
            ("keras:resnet50:missing.h5", BackboneError, [str(places / "missing.h5"),
                                                          "not found"]),
            ("hub:missing", BackboneError, [str(places / "missing"), "no such directory"]),
            ("run:missing", CheckpointError, [str(places / "missing"), "does not exist"])):
        with pytest.raises(error) as raised:
            parse_model_spec(text)
        message = str(raised.value)
        assert "\n" not in message and all(n in message for n in named), (text, message)
    code, _, stderr = run_cli(finetune_cli.main, ["--dataset_dir", str(places),
                                                  "--model_name", "run:missing"])
    assert_one_line_error(code, stderr, str(places / "missing"))


def test_a_hub_spec_builds_a_backbone(tmp_path, monkeypatch):
    hub = make_tiny_hub_module(tmp_path / "hub")
    monkeypatch.chdir(tmp_path)
    backbone = get_backbone("hub:hub", image_size=32)
    assert backbone.name == f"hub:{hub}" and backbone.feature_dim == 16
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    with pytest.warns(RunwayDeprecationWarning, match=re.escape(
            f"get_backbone(hub_handle=...) is deprecated: use get_backbone('hub:{hub}')")):
        alias = get_backbone(hub_handle=str(hub), image_size=32)
    np.testing.assert_allclose(np.asarray(backbone.model(images)),
                               np.asarray(alias.model(images)), atol=1e-6)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished run on the tiny hub module (stage 1 only), named by a ``hub:`` spec."""
    root = tmp_path_factory.mktemp("spec_run")
    hub = make_tiny_hub_module(root / "hub")
    data = make_image_folder(root / "looks", ("a", "b"), per_class=6, size=(40, 56))
    common = dict(dataset_dir=str(data), image_size=32, batch_size=8, stage2_epochs=0,
                  validation_fraction=0.25, test_fraction=0.25, verbose=0)
    run = fine_tune(FinetuneConfig(train_dir=str(root / "run"), model_name=f"hub:{hub}",
                                   **common))
    return root, hub, run, common


def test_a_run_spec_reuses_the_runs_backbone(tiny_run, tmp_path):
    from runway_cnn.training.trainer import FineTuner

    root, hub, run, common = tiny_run
    assert json.loads((run.train_dir / "config.json").read_text())["model_name"] == f"hub:{hub}"
    tuner = FineTuner(FinetuneConfig(train_dir=str(tmp_path / "next"),
                                     model_name=f"run:{run.train_dir}", **common))
    assert tuner.backbone.name == f"run:{run.export_path}"
    paths = tuner.dataset.splits["validation"].paths
    from runway_cnn.backbones.features import extract_features

    np.testing.assert_allclose(extract_features(tuner.backbone, paths, 8),
                               extract_features(run.backbone, paths, 8), atol=1e-5)


@OLDER
def test_runs_recorded_by_older_versions_restore_and_resume(tiny_run, tmp_path):
    """An older ``config.json`` kept ``model_name`` beside the ``hub_handle`` / ``init_from``
    that overrode it: it restores, and the same flags (old or new spelling) resume it."""
    from runway_cnn.training.restore import restore_run
    from runway_cnn.training.resume import check_resume

    root, hub, run, common = tiny_run
    old = tmp_path / "old"
    shutil.copytree(run.train_dir, old)
    config = json.loads((old / "config.json").read_text())
    config.update(model_name="efficientnet_lite0", hub_handle=str(hub), init_from=None)
    del config["init_from_run"]  # older still: the flag did not exist
    (old / "config.json").write_text(json.dumps(config))
    assert current_backbone_settings(config)["model_name"] == f"hub:{hub}"
    with warnings.catch_warnings():  # the user gave no older flag: no deprecation line
        warnings.simplefilter("error", RunwayDeprecationWarning)
        restored = restore_run(old)
    images = np.random.default_rng(2).uniform(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(restored.model(images)),
                               np.asarray(run.model(images)), atol=1e-5)
    for flags in (dict(hub_handle=str(hub)), dict(model_name=f"hub:{hub}")):
        check_resume(old, FinetuneConfig(train_dir=str(old), **flags, **common))
        (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackboneError, match="exactly one"):  # the old override, now refused
        FinetuneConfig(train_dir=str(old), model_name="efficientnet_lite0",
                       hub_handle=str(hub), **common)
    chained = {"model_name": "efficientnet_lite0", "init_from_run": str(run.train_dir),
               "weights": "imagenet"}
    assert current_backbone_settings(chained) | {"model_name": None} == {
        "model_name": None, "init_from_run": None, "init_from": None, "hub_handle": None,
        "weights": "default"}
    assert current_backbone_settings(chained)["model_name"] == f"run:{run.train_dir}"
