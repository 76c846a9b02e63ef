"""Bad inputs and faults: each is found before work starts, or recorded, never silently wrong.

The runs use the tiny CNN of ``tests/_tiny_model.py`` at reduced InputIBA steps on crops of the
real built-in photos, through the real entry point (:func:`inputiba.cli.main`) and the Python
API. Every case here was a fault once: a setting ignored, a finished result marked failed by a
later run, a raw traceback, a file renamed, half an image's outputs left behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from inputiba.cli import main
from inputiba.data.assets import builtin_photos
from inputiba.errors import ExplainError, InputIBAError
from inputiba.workflows.explain import explain_images

TESTS = Path(__file__).resolve().parent
TINY = f"{TESTS / '_tiny_model.py'}:factory"
SMALL = {"feat_steps": 2, "feat_draws": 2, "gan_epochs": 1, "gan_dataset_size": 8,
         "gan_subset_size": 4, "gan_batch_size": 8, "input_steps": 3, "input_draws": 2}
REDUCED = [arg for k, v in SMALL.items() for arg in ("--set", f"{k}={v}")]
TINY_ARGS = ["--model", TINY, "--layer", "3", "--estimation-samples", "16", "-q"]

pytestmark = pytest.mark.usefixtures("one_thread", "stats_cache")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 96 x 128 crop of the built-in chelsea photo, as PNG."""
    folder = tmp_path_factory.mktemp("photo")
    img = builtin_photos(["chelsea"])["chelsea"]
    path = folder / "chelsea.png"
    Image.fromarray(img).resize((128, 96)).save(path)
    return path


def _cli(capsys, *args) -> tuple[int, str]:
    rc = main([*map(str, args)])
    return rc, capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# the seed


def test_set_seed_is_the_run_seed(capsys, photo, tmp_path):
    """``--set seed=7`` seeds the run like ``--seed 7`` (it was ignored: maps of seed 0)."""
    maps = {}
    for label, extra in {"set7": ["--set", "seed=7"], "flag7": ["--seed", "7"],
                         "seed0": []}.items():
        out = tmp_path / label
        rc, err = _cli(capsys, "explain", photo, "-o", out, *TINY_ARGS, *REDUCED, *extra)
        assert rc == 0, err
        maps[label] = np.load(out / "chelsea.npy")
        rec = json.loads((out / "results.json").read_text())[0]
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        want = 0 if label == "seed0" else 7
        assert rec["settings"]["seed"] == want and cfg["seed"] == want
        assert "seed" not in rec["settings"]["options"] and "seed" not in cfg["inputiba"]
    np.testing.assert_array_equal(maps["set7"], maps["flag7"])
    assert not np.array_equal(maps["set7"], maps["seed0"])


def test_conflicting_seeds_are_refused(error_line, capsys, photo, tmp_path):
    rc, err = _cli(capsys, "explain", photo, "-o", tmp_path / "o", *TINY_ARGS, "--seed", "3",
                   "--set", "seed=7")
    assert rc != 0
    error_line(err, "--seed 3", "seed=7")
    assert not (tmp_path / "o").exists()
    with pytest.raises(ExplainError, match="disagree"):
        explain_images([photo], model=TINY, layer="3", seed=3, options={"seed": 7},
                       out_dir=tmp_path / "p", progress=False)


def test_api_options_seed_is_the_run_seed(photo, tmp_path):
    a = explain_images([photo], model=TINY, layer="3", estimation_samples=16,
                       options={**SMALL, "seed": 5}, out_dir=tmp_path / "a", progress=False)
    b = explain_images([photo], model=TINY, layer="3", estimation_samples=16, seed=5,
                       options=SMALL, out_dir=tmp_path / "b", progress=False)
    assert a[0]["settings"]["seed"] == b[0]["settings"]["seed"] == 5
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "chelsea.npy"),
                                  np.load(tmp_path / "b" / "chelsea.npy"))


def test_ensemble_flag_is_the_ensemble_setting(error_line, capsys, photo, tmp_path):
    """``--ensemble 2`` is ``--set ensemble=2``: the run's settings (results.json, config.yaml)
    record it and the maps are those of ``--set``; a disagreeing pair, a bad K and a baseline
    method are refused before any output is written."""
    maps = {}
    for label, extra in {"flag": ["--ensemble", "2"], "set": ["--set", "ensemble=2"],
                         "both": ["--ensemble", "2", "--set", "ensemble=2"], "one": []}.items():
        out = tmp_path / label
        rc, err = _cli(capsys, "explain", photo, "-o", out, *TINY_ARGS, *REDUCED, *extra,
                       "--preset", "fast")  # one run per map unless asked (not consensus)
        assert rc == 0, err
        maps[label] = np.load(out / "chelsea.npy")
        rec = json.loads((out / "results.json").read_text())[0]
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        want = 1 if label == "one" else 2
        assert rec["settings"]["options"].get("ensemble", 1) == want
        assert cfg["inputiba"].get("ensemble", 1) == want
    np.testing.assert_array_equal(maps["flag"], maps["set"])
    np.testing.assert_array_equal(maps["flag"], maps["both"])
    assert not np.array_equal(maps["flag"], maps["one"])
    for extra, words in [(["--ensemble", "2", "--set", "ensemble=3"], ["--ensemble 2", "disagree"]),
                         (["--ensemble", "0"], ["ensemble must be an integer >= 1"]),
                         (["--ensemble", "2", "--method", "gradcam"], ["--ensemble 2", "InputIBA"])]:
        rc, err = _cli(capsys, "explain", photo, "-o", tmp_path / "bad", *TINY_ARGS, *extra)
        assert rc != 0
        error_line(err, *words)
        assert not (tmp_path / "bad").exists()
    # explain-dataset too: its config.yaml records K and its map is explain's
    out = tmp_path / "dataset"
    rc, err = _cli(capsys, "explain-dataset", photo.parent, "-o", out, *TINY_ARGS, *REDUCED,
                   "--ensemble", "2", "--preset", "fast")
    assert rc == 0, err
    assert yaml.safe_load((out / "config.yaml").read_text())["inputiba"]["ensemble"] == 2
    np.testing.assert_allclose(np.load(out / "chelsea.npy"), maps["flag"], atol=1e-6)
    with pytest.raises(SystemExit):
        main(["explain-text", "--help"])
    assert "--ensemble K" in capsys.readouterr().out


def test_config_file_inputiba_seed_is_the_run_seed(tmp_path):
    from inputiba.errors import RunConfigError
    from inputiba.workflows.runconfig import parse_run_config

    assert parse_run_config({"inputiba": {"seed": 7}}).seed == 7
    with pytest.raises(RunConfigError, match="disagree"):
        parse_run_config({"seed": 1, "inputiba": {"seed": 7}})


# --------------------------------------------------------------------------------------------
# weights


@pytest.mark.parametrize("kind", ["bytes", "pickled-object", "numpy", "text"])
def test_garbage_weights_one_clean_line(error_line, capsys, photo, tmp_path, kind):
    path = tmp_path / f"{kind}.pth"
    if kind == "bytes":
        path.write_bytes(b"\x00not a checkpoint" * 10)
    elif kind == "pickled-object":
        torch.save({"state": Path("x")}, path)  # a pickled class: refused by safe loading
    elif kind == "numpy":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros(3))
    else:
        path.write_text("weights\n" * 50)
    rc, err = _cli(capsys, "explain", photo, "-o", tmp_path / "o", *TINY_ARGS,
                   "--weights", path)
    assert rc == 1
    line = error_line(err, str(path), "Cannot read weights file")
    assert "weights_only" not in line and "torch.load" not in line
    assert len(line) < 300
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------
# output folder and names


@pytest.mark.parametrize("command", ["explain", "explain-dataset"])
def test_unwritable_output_folder_is_found_before_work(error_line, capsys, photo, tmp_path, command,
                                                      monkeypatch):
    import inputiba.workflows.explain as wf

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(wf, "resolve_model", no_model)
    monkeypatch.setattr("inputiba.workflows.dataset.resolve_model", no_model)
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    source = photo if command == "explain" else photo.parent
    for out, words in ((blocker, ["is a file"]), (blocker / "out", ["cannot be created"])):
        rc, err = _cli(capsys, command, source, "-o", out, "--model", TINY, "--layer", "3",
                       "-q")
        assert rc == 1
        error_line(err, str(out), *words)


def test_unicode_and_space_names_kept_in_outputs(capsys, photo, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["my cät 猫", "50% #1"]
    for n in names:
        (folder / f"{n}.png").write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    rc, err = _cli(capsys, "explain", folder, "-o", out, *TINY_ARGS, *REDUCED)
    assert rc == 0, err
    records = json.loads((out / "results.json").read_text())
    assert sorted(r["name"] for r in records) == sorted(names)
    for n in names:
        for suffix in (".npy", ".png", ".feature.npy", ".gan.npy"):
            assert (out / f"{n}{suffix}").is_file(), (n, suffix)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert 'href="50%25%20%231.png"' in html  # the overlay link survives '%' and '#'


def test_later_failure_keeps_the_finished_record(capsys, photo, tmp_path):
    """A rerun in which an image fails (here: its file got corrupted) leaves its earlier ok
    record and files as they were (it used to turn the record into 'failed')."""
    img = tmp_path / "cat.png"
    img.write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    rc, err = _cli(capsys, "explain", img, "-o", out, *TINY_ARGS, *REDUCED)
    assert rc == 0, err
    first = json.loads((out / "results.json").read_text())
    saved = np.load(out / "cat.npy")
    img.write_bytes(b"not a png any more")
    rc, err = _cli(capsys, "explain", img, "-o", out, *TINY_ARGS, *REDUCED)
    assert rc == 1 and "inputiba: skipped" in err and "cat.png" in err
    assert json.loads((out / "results.json").read_text()) == first
    np.testing.assert_array_equal(np.load(out / "cat.npy"), saved)
    # with its files gone, the failure is what there is to report
    (out / "cat.npy").unlink()
    _cli(capsys, "explain", img, "-o", out, *TINY_ARGS, *REDUCED)
    assert json.loads((out / "results.json").read_text())[0]["status"] == "failed"


# --------------------------------------------------------------------------------------------
# image sizes and the outputs of one image as a group


def test_tiny_images_are_refused_and_leave_nothing(capsys, photo, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.png").write_bytes(photo.read_bytes())
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.full((5, 300, 3), 90, np.uint8)).save(folder / "strip.png")
    out = tmp_path / "out"
    rc, err = _cli(capsys, "explain", folder, "-o", out, *TINY_ARGS, *REDUCED)
    assert rc == 1 and "Traceback" not in err
    records = {r["name"]: r for r in json.loads((out / "results.json").read_text())}
    assert records["good"]["status"] == "ok"
    for name, size in (("dot", "1 x 1"), ("strip", "5 x 300")):
        assert records[name]["status"] == "failed"
        assert f"{size} pixels is too small" in records[name]["error"]
        assert "at least 8 pixels" in records[name]["error"]
        assert not [p for p in out.rglob(f"{name}.*")], name
    rec = explain_images([np.zeros((3, 3, 3), np.uint8)], model=TINY, layer="3",
                         estimation_samples=16, options=SMALL, out_dir=tmp_path / "api",
                         progress=False)[0]
    assert rec["status"] == "failed" and "too small" in rec["error"]


def test_a_failed_write_leaves_no_partial_outputs(photo, tmp_path, monkeypatch):

    out = tmp_path / "out"
    kw = {"model": TINY, "layer": "3", "estimation_samples": 16, "options": SMALL,
          "out_dir": out, "progress": False}
    assert explain_images([photo], **kw)[0]["status"] == "ok"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith("chelsea")}
    assert len(before) == 4

    def broken_overlay(*args, **kwargs):
        raise OSError(28, "No space left on device")

    import inputiba.workflows.image_outputs as outputs

    monkeypatch.setattr(outputs, "save_overlay", broken_overlay)
    rec = explain_images([photo], seed=3, **kw)[0]
    assert rec["status"] == "failed" and "No space left" in rec["error"]
    # the maps of the failed run (written before the overlay failed) never replaced the
    # earlier ones, and no temporary file remains
    assert {p.name: p.read_bytes() for p in out.iterdir()
            if p.name.startswith("chelsea")} == before
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    fresh = tmp_path / "fresh"
    rec = explain_images([photo], **{**kw, "out_dir": fresh})[0]
    assert rec["status"] == "failed"
    assert not [p for p in fresh.rglob("chelsea*")]


def test_large_images_are_explained_at_a_bounded_resolution(photo, tmp_path, monkeypatch):
    """Above MAX_IMAGE_SIDE the image is read scaled down (recorded, with a warning); the maps
    are still at the full size, the size ``inputiba evaluate`` checks against the image."""
    import inputiba.workflows.explain as wf

    monkeypatch.setattr(wf, "MAX_IMAGE_SIDE", 100)
    with pytest.warns(UserWarning, match="explained at 75 x 100"):
        rec = explain_images([photo], model=TINY, layer="3", estimation_samples=16,
                             options=SMALL, out_dir=tmp_path, progress=False)[0]
    assert rec["status"] == "ok"
    assert rec["size"] == [96, 128] and rec["working_size"] == [75, 100]
    assert len(rec["warnings"]) == 1 and "longer side at most 100" in rec["warnings"][0]
    for suffix in (".npy", ".feature.npy", ".gan.npy"):
        assert np.load(tmp_path / f"chelsea{suffix}").shape == (96, 128)
    m = np.load(tmp_path / "chelsea.npy")
    assert m.std() > 0 and m.min() >= 0 and m.max() <= 1
    feat = np.load(tmp_path / "chelsea.feature.npy")
    assert rec["feature_max_bits"] == pytest.approx(float(feat.max()))


# --------------------------------------------------------------------------------------------
# the same faults through the Python API and explain-dataset


def test_api_faults_raise_inputiba_errors():
    from tests._tiny_model import factory

    from inputiba import InputIBA
    from inputiba.errors import (
        InputError,
        LayerNotFoundError,
        StatisticsError,
        TargetError,
    )

    net, _, _ = factory()
    with pytest.raises(LayerNotFoundError):
        InputIBA(net, "no.such.layer")
    ex = InputIBA(net, "3", **SMALL)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(StatisticsError, match="No layer statistics"):
        ex.attribute(x, target=1)
    ex.estimate([torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))],
                progress=False)
    for target, words in (("cat", "class indices"), (1.5, "whole class indices"),
                          ([1, 2, 3], "3 targets for a batch of 2"), (7, "out of range")):
        with pytest.raises(TargetError, match=words):
            ex.attribute(x, target=target)
    with pytest.raises(InputError, match=r"inputs of shape \(2, 1, 64, 64\)"):
        ex.attribute(x[:, :1], target=1)  # one channel for a three-channel model
    with pytest.raises(InputError, match="NaN"):
        ex.attribute(torch.full_like(x, float("nan")), target=1)
    assert all(issubclass(e, InputIBAError) for e in (InputError, StatisticsError, TargetError))


@pytest.mark.parametrize(("extra", "words"), [
    (["--layer", "nope"], ["Layer 'nope' not found"]),
    (["--layer", "3", "--targets", "99"], ["Target class 99", "out of range"]),
    (["--layer", "3", "--set", "input_steps=-1"], ["input_steps"]),
])
def test_explain_dataset_run_faults_are_one_line(error_line, capsys, photo, tmp_path, extra, words):
    rc, err = _cli(capsys, "explain-dataset", photo.parent, "-o", tmp_path / "o", "--model",
                   TINY, "-q", *extra)
    assert rc == 1
    error_line(err, *words)


# --------------------------------------------------------------------------------------------
# logs


@pytest.mark.parametrize("command", ["explain", "explain-dataset"])
def test_log_file_gets_a_few_lines_per_image(photo, tmp_path, stats_cache, command):
    """``inputiba explain > log 2>&1``: no progress-bar redraws, fewer than 5 lines per image
    (the nested bars used to write hundreds of carriage-return lines per image)."""
    import subprocess
    import sys

    import inputiba

    folder = tmp_path / "in"
    folder.mkdir()
    img = np.asarray(Image.open(photo))
    n = 4
    for k in range(n):
        Image.fromarray(np.roll(img, 10 * k, axis=1)).save(folder / f"img{k}.png")
    src = Path(inputiba.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH",
                                                                                 "")]),
           "INPUTIBA_CACHE": str(stats_cache)}
    log = tmp_path / "log"
    layer = "3" if command == "explain" else "2"
    with open(log, "wb") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "inputiba.cli", command, str(folder), "-o",
             str(tmp_path / "out"), "--model", TINY, "--layer", layer, "--batch-size", "1",
             "--estimation-samples", "16", *REDUCED],
            stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=600)
    text = log.read_bytes().decode()
    assert proc.returncode == 0, text
    assert "\r" not in text and "\x1b[" not in text  # no redraws, no cursor movement
    lines = text.splitlines()
    assert len(lines) < 5 * n, text
    assert sum(f"img{k}" in ln for k in range(n) for ln in lines) >= n or \
        command == "explain-dataset"  # explain names each finished image
    assert any(f"[{n}/{n}]" in ln for ln in lines), text


def test_explain_text_model_faults_are_one_line(error_line, capsys, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 8)
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    for model, words in ((tmp_path / "missing.pt", ["neither 'lstm', 'minilm'"]),
                         (garbage, ["Cannot read text-model checkpoint", str(garbage)]),
                         (listing, ["is not a text-model checkpoint"])):
        rc, err = _cli(capsys, "explain-text", "A fine film.", "--model", model, "--out",
                       tmp_path / "o", "--quiet")
        assert rc == 1
        line = error_line(err, *words)
        assert "Error:" not in line  # inputiba's own error: no exception type, no traceback
    rc, err = _cli(capsys, "explain-text", "   ", "--out", tmp_path / "o", "--quiet")
    assert rc == 1
    error_line(err, "no texts")
