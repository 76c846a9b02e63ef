"""Run configurations: validation of the YAML schema, the shipped files, ``--config`` with
flag overrides, the written ``config.yaml`` reproducing a run, and ``inputiba layers``."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import inputiba
from inputiba.cli import main
from inputiba.core.config import DEFAULT_PRESET, PRESETS, InputIBAConfig, resolve_config
from inputiba.core.layers import get_layer
from inputiba.workflows.runconfig import (
    RunConfigError,
    load_run_config,
    parse_run_config,
    shipped_configs,
    write_run_config,
)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY = f"{TESTS / '_tiny_model.py'}:factory"
SMALL = {"feat_steps": 2, "feat_draws": 2, "gan_epochs": 1, "gan_dataset_size": 8,
         "gan_subset_size": 4, "gan_batch_size": 8, "input_steps": 3, "input_draws": 2}
REDUCED = [arg for k, v in SMALL.items() for arg in ("--set", f"{k}={v}")]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INPUTIBA_CACHE", str(tmp_path / "cache"))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(("text", "culprit", "hint"), [
    ("modle: {name: vgg16}\n", "'modle'", "'model'"),
    ("model: {name: vgg16, layr: features.17}\n", "'model.layr'", "'layer'"),
    ("model: {preprocessing: {size: 32, mena: [0.5]}}\n", "'model.preprocessing.mena'", "'mean'"),
    ("inputiba: {input_step: 20}\n", "'inputiba.input_step'", "'input_steps'"),
    ("estimation: {n_sample: 20}\n", "'estimation.n_sample'", "'n_samples'"),
    ("output: {layuot: class}\n", "'output.layuot'", "'layout'"),
    ("preset: papr\n", "'papr'", "'paper'"),
])
def test_unknown_keys_are_named_with_a_hint_and_the_file(tmp_path, text, culprit, hint):
    path = _write(tmp_path, text)
    with pytest.raises(RunConfigError) as err:
        load_run_config(path)
    msg = str(err.value)
    assert culprit in msg and hint in msg and str(path) in msg


@pytest.mark.parametrize(("text", "culprit"), [
    ("seed: one\n", "'seed'"),
    ("model: {layer: 17}\n", "'model.layer'"),
    ("estimation: {n_samples: 0}\n", "'estimation.n_samples'"),
    ("output: {layout: tree}\n", "'output.layout'"),
    ("model: {preprocessing: {mean: [0.5, 0.5]}}\n", "'model.preprocessing.mean'"),
    ("task: audio\n", "'task'"),
    ("model: [vgg16]\n", "'model'"),
])
def test_wrong_values_are_named(tmp_path, text, culprit):
    with pytest.raises(RunConfigError, match=culprit):
        load_run_config(_write(tmp_path, text))


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(RunConfigError, match="Invalid YAML"):
        load_run_config(_write(tmp_path, "model: {name: [\n"))
    with pytest.raises(RunConfigError, match="did you mean 'vgg16_imagenet'"):
        load_run_config("vgg16_imagnet")


def test_every_inputiba_setting_is_accepted_and_resolved():
    names = [f.name for f in dataclasses.fields(InputIBAConfig) if f.name != "seed"]
    settings = {n: getattr(InputIBAConfig(), n) for n in names}
    settings["input_steps"] = 7
    cfg = parse_run_config({"preset": "paper", "inputiba": settings, "seed": 3})
    assert cfg.resolved() == resolve_config("paper", input_steps=7, seed=3)
    # over a preset: the preset's values, then the file's
    fast = parse_run_config({"preset": "fast", "inputiba": {"gan_epochs": 2}}).resolved()
    assert fast == resolve_config("fast", gan_epochs=2)


def test_shipped_configs_are_valid_and_as_documented():
    shipped = shipped_configs()
    assert set(shipped) >= {"vgg16_imagenet", "resnet50_imagenet", "efficientnet_lite0",
                            "small_cnn_32", "lstm_text", "minilm_text"}
    vgg = load_run_config("vgg16_imagenet")
    assert (vgg.model.name, vgg.model.layer, vgg.preset) == ("vgg16", "features.17", "paper")
    assert vgg.resolved() == resolve_config("paper")  # the original settings
    assert load_run_config("resnet50_imagenet").model.layer == "layer2"
    eff = load_run_config("efficientnet_lite0")
    assert (eff.model.name, eff.model.weights) == ("efficientnet-lite0", None)
    assert eff.preset == DEFAULT_PRESET  # "the built-in default", as its comment says
    for name in ("lstm_text", "minilm_text"):
        assert load_run_config(name).task == "text"


def test_shipped_image_layers_exist_with_the_documented_shapes():
    """Each image configuration's layer is a real layer of its architecture."""
    import torchvision

    from inputiba.models.resolve import resolve_model

    for name in ("vgg16_imagenet", "resnet50_imagenet"):
        cfg = load_run_config(name)
        with torch.device("meta"):  # the structure only: no weights allocated
            net = torchvision.models.get_model(cfg.model.name)
        get_layer(net, cfg.model.layer)  # raises when missing
    for name in ("efficientnet_lite0", "small_cnn_32"):
        cfg = load_run_config(name)
        rm = resolve_model(cfg.model.name)
        get_layer(rm.model, cfg.model.layer)
    from inputiba.models.small_cnn import small_cnn_32

    net, pre, _ = small_cnn_32()
    with torch.no_grad():
        h = net.features[:2](torch.zeros(1, 3, *pre.hw))
    assert h.shape == (1, 64, 8, 8)


def test_written_config_round_trips(tmp_path):
    cfg = load_run_config("small_cnn_32").with_overrides(**{"model.layer": "features.0",
                                                             "seed": 5})
    path = write_run_config(cfg, tmp_path)
    data = yaml.safe_load(path.read_text())
    assert data["inputiba_version"] == inputiba.__version__
    assert data["seed"] == 5 and data["model"]["layer"] == "features.0"
    assert set(data["inputiba"]) == {f.name for f in dataclasses.fields(InputIBAConfig)} - {"seed"}
    again = load_run_config(path)
    assert again.resolved() == cfg.resolved()
    assert again.to_dict() == cfg.to_dict()


# ----------------------------------------------------------------- the CLI


def _explain(*args: str) -> int:
    return main(["explain", *args])


def test_config_reproduces_a_run_and_flags_override(tmp_path, capsys):
    """Run 1 from flags; run 2 from run 1's config.yaml: the same maps. Run 3: the same file
    with an explicit --seed: that flag wins, the rest (the file's settings) stays."""
    photo = tmp_path / "photo.png"
    from PIL import Image

    from inputiba.data.assets import builtin_photos

    Image.fromarray(builtin_photos(["coffee"])["coffee"]).save(photo)
    out1, out2, out3 = tmp_path / "one", tmp_path / "two", tmp_path / "three"
    assert _explain(str(photo), "-m", TINY, "-l", "4", "--estimation-samples", "8", "-q",
                    "--seed", "2", "-o", str(out1), *REDUCED) == 0
    written = yaml.safe_load((out1 / "config.yaml").read_text())
    assert written["model"] == {"name": TINY, "weights": None, "layer": "4",
                                "preprocessing": None}
    assert written["seed"] == 2 and written["inputiba"]["input_steps"] == 3
    assert written["estimation"]["n_samples"] == 8 and written["output"]["dir"] == str(out1)

    assert _explain(str(photo), "--config", str(out1 / "config.yaml"), "-q",
                    "-o", str(out2)) == 0
    m1, m2 = np.load(out1 / "photo.npy"), np.load(out2 / "photo.npy")
    np.testing.assert_array_equal(m1, m2)
    second = yaml.safe_load((out2 / "config.yaml").read_text())
    assert second["output"]["dir"] == str(out2)
    assert {k: v for k, v in second.items() if k != "output"} == {
        k: v for k, v in written.items() if k != "output"}

    assert _explain(str(photo), "--config", str(out1 / "config.yaml"), "-q", "--seed", "3",
                    "--set", "input_steps=4", "-o", str(out3)) == 0
    third = yaml.safe_load((out3 / "config.yaml").read_text())
    assert third["seed"] == 3 and third["inputiba"]["input_steps"] == 4
    assert third["model"]["layer"] == "4" and third["inputiba"]["gan_epochs"] == 1
    assert not np.array_equal(np.load(out3 / "photo.npy"), m1)


def test_config_errors_on_the_command_line(tmp_path, capsys):
    bad = _write(tmp_path, "model: {nme: vgg16}\n")
    assert _explain("x.png", "--config", str(bad)) == 1
    err = capsys.readouterr().err
    assert "'model.nme'" in err and "'name'" in err and str(bad) in err
    assert _explain("x.png", "--config", "lstm_text") == 1
    assert "explain-text" in capsys.readouterr().err


def test_every_attribution_command_takes_config(capsys):
    for command in ("explain", "explain-dataset", "compare"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "--config FILE" in out, command


def test_layers_command_lists_shapes(capsys):
    assert main(["layers", TINY]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    shapes = {row[0]: row[-1] for row in lines if row}
    # 64 x 64 input (the model's preprocessing): stride-2 convs halve it twice
    assert shapes["0"] == "8x64x64" and shapes["2"] == "16x32x32" and shapes["4"] == "16x16x16"
    assert main(["layers", "inputiba.models.small_cnn:small_cnn_32"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:1] == ["features.1"] and "64x8x8" in line
               for line in out.splitlines())


# ----------------------------------------------------------------- tutorials


@pytest.mark.parametrize("script", ["tutorial_images.py", "tutorial_text.py"])
def test_tutorials_run_quick(tmp_path, script):
    if script == "tutorial_text.py":
        pytest.importorskip("inputiba.text", reason="the text side (inputiba.text, on branch "
                                                    "feat/text) is not installed")
    import os

    env = {**os.environ, "PYTHONPATH": str(Path(inputiba.__file__).resolve().parents[1])}
    if script == "tutorial_text.py":  # reuse the packaged text model trained in the user cache
        env.pop("INPUTIBA_CACHE", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp_path.glob("*.png")), "the tutorial saves its figures"


def test_text_configs_name_real_layers():
    """The text configurations' layers exist in the packaged text models (and their settings
    start from the text side's defaults)."""
    pytest.importorskip("inputiba.text", reason="the text side (inputiba.text, on branch "
                                                "feat/text) is not installed")
    from inputiba.modalities.text import TEXT_DEFAULTS
    from inputiba.models.text import checkpoint_path
    from inputiba.models.text_training import load_text_model

    for name in ("lstm_text", "minilm_text"):
        cfg = load_run_config(name)
        assert cfg.resolved() == resolve_config(
            InputIBAConfig().replace(**TEXT_DEFAULTS).replace(**PRESETS[cfg.preset]),
            seed=cfg.seed)
        if not checkpoint_path(cfg.model.name).exists():
            continue  # not trained here yet (training takes minutes): the layer check needs it
        tm = load_text_model(cfg.model.name)
        get_layer(tm.model, cfg.model.layer)
        assert cfg.model.layer == tm.feature_layer
