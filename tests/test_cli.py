"""``inputiba explain`` end to end: the output contract, bad inputs, the HTML gallery in a browser.

The main run explains two real photos (scikit-image's chelsea as an EXIF-rotated JPEG, coffee as
an RGBA PNG) with the packaged EfficientNet-Lite0 and the real InputIBA at reduced steps, through
the real entry point (``python -m inputiba.cli``). Bad-input cases then run against the same
output folder and must leave its good outputs byte-for-byte intact. A tiny CNN
(``tests/_tiny_model.py``) covers the mixed good/bad run and the Python one-liner cheaply.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import inputiba
from inputiba.cli import main
from inputiba.core.config import DEFAULT_PRESET
from inputiba.data.assets import builtin_photos
from inputiba.workflows.explain import explain_images
from inputiba.workflows.records import RECORD_KEYS

TESTS = Path(__file__).resolve().parent
SRC = Path(inputiba.__file__).resolve().parents[1]  # the inputiba these tests import
TINY = f"{TESTS / '_tiny_model.py'}:factory"
#: Reduced InputIBA steps (keyword overrides of the preset) to keep the runs short.
SMALL = {"feat_steps": 2, "feat_draws": 2, "gan_epochs": 1, "gan_dataset_size": 8,
         "gan_subset_size": 4, "gan_batch_size": 8, "input_steps": 3, "input_draws": 2}
REDUCED = [arg for k, v in SMALL.items() for arg in ("--set", f"{k}={v}")]
COMMON = ["--estimation-samples", "16", "--batch-size", "2", "--seed", "0"]
STEMS = ("chelsea", "coffee")
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """chelsea.jpg (stored rotated, EXIF says turn back) and coffee.png (RGBA)."""
    folder = tmp_path_factory.mktemp("photos")
    imgs = builtin_photos(list(STEMS))
    cat = Image.fromarray(np.rot90(imgs["chelsea"]).copy())  # stored rotated left...
    exif = cat.getexif()
    exif[0x0112] = 6  # ...and displayed rotated right: the original orientation
    cat.save(folder / "chelsea.jpg", exif=exif, quality=92)
    rgba = np.dstack([imgs["coffee"], np.full(imgs["coffee"].shape[:2], 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "coffee.png")
    sizes = {"chelsea": imgs["chelsea"].shape[:2], "coffee": imgs["coffee"].shape[:2]}
    return folder, sizes


@pytest.fixture(scope="module")
def good_run(stats_cache, photos, tmp_path_factory):
    """The CLI, as a subprocess, on the two photos with EfficientNet-Lite0."""
    folder, sizes = photos
    out = tmp_path_factory.mktemp("out")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get(
        "PYTHONPATH", "")]), "INPUTIBA_CACHE": str(stats_cache)}
    cmd = [sys.executable, "-m", "inputiba.cli", "explain", str(folder / "chelsea.jpg"),
           str(folder / "coffee.png"), "-o", str(out), *COMMON, *REDUCED]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return out, sizes, proc


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest()
            for p in folder.iterdir() if p.is_file() and p.name.startswith(STEMS)}


def _explain(capsys, *args) -> tuple[int, str]:
    rc = main(["explain", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.err


def test_good_run_exits_zero_with_summary(good_run):
    _, _, proc = good_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("inputiba: explained 2 of 2 images"), last
    assert "built-in stand-in" in proc.stderr  # the one-line warning about the stand-in
    assert "Traceback" not in proc.stderr


def test_output_contract_files(good_run):
    out, sizes, proc = good_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stem in STEMS:
        h, w = sizes[stem]
        m = np.load(out / f"{stem}.npy")
        assert m.dtype == np.float32 and m.shape == (h, w)
        assert np.isfinite(m).all() and m.min() >= 0.0 and m.max() <= 1.0
        assert m.std() > 0  # a map, not a constant
        feat = np.load(out / f"{stem}.feature.npy")
        assert feat.dtype == np.float32 and feat.shape == (h, w)
        assert np.isfinite(feat).all() and feat.min() >= 0.0 and feat.max() > 0
        gan = np.load(out / f"{stem}.gan.npy")
        assert gan.dtype == np.float32 and gan.shape == (h, w)
        assert gan.min() >= 0.0 and gan.max() <= 1.0
        with Image.open(out / f"{stem}.png") as png:
            assert png.format == "PNG" and png.width > 200 and png.height > 100
    # nothing half-written left behind
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_results_json_schema(good_run):
    out, sizes, proc = good_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads((out / "results.json").read_text())
    assert isinstance(records, list) and [r["name"] for r in records] == list(STEMS)
    for rec in records:
        assert set(RECORD_KEYS) <= set(rec)
        assert rec["status"] == "ok" and rec["error"] is None
        assert rec["file"].endswith((".jpg", ".png")) and Path(rec["file"]).exists()
        assert rec["size"] == list(sizes[rec["name"]])
        assert rec["method"] == "InputIBA"
        tgt = rec["target"]
        assert isinstance(tgt["index"], int) and 0 <= tgt["index"] < 1000
        assert isinstance(tgt["name"], str) and tgt["name"]
        # default target: the predicted class, with its probability
        assert tgt["index"] == rec["predicted"]["index"]
        assert 0.0 < rec["probability"] <= 1.0
        assert rec["probability"] == pytest.approx(rec["predicted"]["probability"], abs=1e-3)
        s = rec["settings"]
        assert s["model"] == "efficientnet-lite0" and s["layer"] == "_blocks.5"
        assert s["preset"] == DEFAULT_PRESET and s["seed"] == 0 and s["batch_size"] == 2
        assert s["statistics"]["kind"] == "built-in stand-in" and s["statistics"]["samples"] == 16
        assert s["options"] == SMALL
        assert set(rec["seconds"]) >= {"feature", "gan", "input"}
        assert all(v >= 0 for v in rec["seconds"].values())
        assert set(rec["losses"]) == {"feature", "gan", "input"}
        for stage in ("feature", "input"):  # final loss = cls + beta * info, all finite
            loss = rec["losses"][stage]
            assert all(np.isfinite(v) for v in loss.values()), loss
            assert loss["cls"] >= 0 and loss["info"] >= 0
        for key in ("map", "overlay", "feature", "gan"):
            assert (out / rec["outputs"][key]).is_file()
        gan = np.load(out / rec["outputs"]["gan"])
        assert rec["gan_range"] == pytest.approx([gan.min(), gan.max()])
        feat = np.load(out / rec["outputs"]["feature"])
        assert rec["feature_max_bits"] == pytest.approx(float(feat.max()))
    by_name = {r["name"]: r for r in records}
    assert by_name["chelsea"]["target"]["index"] in CAT_CLASSES


def test_gallery_is_offline(good_run):
    out, _, proc = good_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (out / "index.html").read_text()
    assert html.count('src="data:image/jpeg;base64,') == 4 * len(STEMS)
    lowered = html.lower()
    assert "http://" not in lowered and "https://" not in lowered and "<script" not in lowered
    assert "<link" not in lowered and "@import" not in lowered
    for stem in STEMS:
        assert f'href="{stem}.png"' in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_gallery_renders_in_headless_chromium(good_run, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: scripts/setup.sh dev installs it (as root)")
        pytest.skip("chromium not installed (bash scripts/setup.sh dev installs it as root)")
    out, _, proc = good_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
           "--window-size=1400,900", f"--screenshot={shot}", (out / "index.html").as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), res.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("RGB")).astype(np.float64)
    assert px.shape[0] >= 800 and px.shape[1] >= 1300
    assert px.std() > 20  # not blank
    # the thumbnails really rendered: strongly coloured pixels (the jet-coloured maps)
    saturation = px.max(-1) - px.min(-1)
    assert (saturation > 128).mean() > 0.02


@pytest.fixture
def good_out(good_run):
    out, _, proc = good_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _assert_intact(out: Path, before: dict[str, str]) -> None:
    assert _snapshot(out) == before


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--target", "1000"], ["Target class 1000", "out of range", "1000 classes"]),
        (["--target", "-3"], ["Target class -3", "out of range"]),
        (["--target", "tabby kat"], ["Unknown class name 'tabby kat'", "tabby"]),
        (["--layer", "_blocks.99"], ["Layer '_blocks.99' not found", "_blocks.9"]),
    ],
)
def test_run_level_errors(error_line, capsys, good_out, photos, extra, words):
    before = _snapshot(good_out)
    folder, _ = photos
    rc, err = _explain(capsys, folder / "chelsea.jpg", "-o", good_out, "-q", *COMMON, *REDUCED,
                       *extra)
    assert rc != 0
    error_line(err, *words)
    _assert_intact(good_out, before)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--model", "resnet5000"], ["Unknown model 'resnet5000'", "resnet50"]),
        (["--model", "no_such_module_xyz:build"], ["no_such_module_xyz"]),
        (["--model", TINY, "--layer", "3", "--target", "5"], ["Target class 5", "5 classes"]),
        (["--model", TINY, "--layer", "3", "--target", "cat"], ["Unknown class name 'cat'"]),
        (["--model", TINY], ["No default layer", "--layer"]),
        (["--model", TINY, "--layer", "3", "--estimation", "/no/such/folder"],
         ["/no/such/folder", "does not exist"]),
        (["--model", TINY, "--layer", "3", "--device", "cuda:7"] if not
         torch.cuda.is_available() else ["--device", "nonsense"], ["evice"]),
    ],
)
def test_run_level_errors_small_model(error_line, capsys, good_out, photos, extra, words):
    before = _snapshot(good_out)
    folder, _ = photos
    rc, err = _explain(capsys, folder / "chelsea.jpg", "-o", good_out, "-q", *extra)
    assert rc != 0
    error_line(err, *words)
    _assert_intact(good_out, before)


def test_traceback_on_request(good_out, photos):
    from inputiba.workflows.explain import ExplainError

    folder, _ = photos
    with pytest.raises(ExplainError, match="out of range"):
        main(["--traceback", "explain", str(folder / "chelsea.jpg"), "-o", str(good_out),
              "--model", TINY, "--layer", "3", "--target", "9"])


def test_weights_that_do_not_fit(error_line, capsys, good_out, photos, tmp_path):
    before = _snapshot(good_out)
    folder, _ = photos
    wrong = tmp_path / "wrong.pth"
    torch.save(torch.nn.Linear(4, 2).state_dict(), wrong)
    rc, err = _explain(capsys, folder / "chelsea.jpg", "-o", good_out, "-q", "--weights", wrong)
    assert rc != 0
    error_line(err, str(wrong))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint")
    rc, err = _explain(capsys, folder / "chelsea.jpg", "-o", good_out, "-q", "--model", TINY,
                       "--layer", "2", "--weights", garbage)
    assert rc != 0
    error_line(err, str(garbage), "Cannot read weights")
    # the tiny model with another model's weights: counts what does not fit
    rc, err = _explain(capsys, folder / "chelsea.jpg", "-o", good_out, "-q", "--model", TINY,
                       "--layer", "2", "--weights", wrong)
    assert rc != 0
    error_line(err, str(wrong), "does not fit", "missing", "unexpected")
    _assert_intact(good_out, before)


def test_bad_files_are_recorded_and_good_outputs_kept(capsys, good_out, tmp_path):
    """Corrupt file, missing path, empty folder, non-image: each reported on its own line,
    recorded as failed, the earlier good outputs of the folder untouched."""
    before = _snapshot(good_out)
    data = (good_out / "chelsea.png").read_bytes()
    (tmp_path / "broken.png").write_bytes(data[: len(data) // 4])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    (tmp_path / "notes.webp").write_text("plain text")
    cases = {
        "broken": (tmp_path / "broken.png", ["broken.png", "corrupt"]),
        "does-not-exist": (tmp_path / "does-not-exist.jpg", ["does-not-exist.jpg", "no such file"]),
        "empty": (tmp_path / "empty", [str(tmp_path / "empty"), "no images"]),
        "notes": (tmp_path / "notes.webp", ["notes.webp", "not a readable image"]),
    }
    rc, err = _explain(capsys, *(p for p, _ in cases.values()), "-o", good_out, "-q",
                       *COMMON, *REDUCED)
    assert rc == 1
    assert "Traceback" not in err and "inputiba: error" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("inputiba: skipped")]
    assert len(lines) == len(cases), err
    for line, (_, words) in zip(lines, cases.values(), strict=True):
        assert all(w in line for w in words), (words, line)
    _assert_intact(good_out, before)
    records = {r["name"]: r for r in json.loads((good_out / "results.json").read_text())}
    assert all(records[s]["status"] == "ok" for s in STEMS)  # earlier results kept
    for name, (_, words) in cases.items():
        assert records[name]["status"] == "failed"
        assert all(w in records[name]["error"] for w in words)
    assert (good_out / "index.html").read_text().count('class="failed"') == len(cases)


def test_only_missing_inputs_fail_fast(capsys, tmp_path):
    out = tmp_path / "out"
    rc, err = _explain(capsys, tmp_path / "nope.jpg", tmp_path / "nope-dir", "-o", out, "-q")
    assert rc == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("inputiba: skipped")]
    assert len(lines) == 2 and "nope.jpg" in lines[0] and "nope-dir" in lines[1]
    records = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in records] == ["failed", "failed"]


def test_output_folder_never_overwrites_inputs(error_line, capsys, photos):
    folder, _ = photos
    before = (folder / "coffee.png").read_bytes()
    rc, err = _explain(capsys, folder / "coffee.png", "-o", folder, "-q")
    assert rc != 0
    error_line(err, "would overwrite the input image", "coffee.png")
    assert (folder / "coffee.png").read_bytes() == before
    assert not (folder / "coffee.npy").exists()


def test_mixed_run_completes_the_good_images(capsys, stats_cache, photos, tmp_path):
    """Tiny CNN: a bad file in the middle of a batch costs only itself."""
    folder, sizes = photos
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((folder / "chelsea.jpg").read_bytes()[:2000])
    out = tmp_path / "out"
    rc, err = _explain(capsys, folder / "chelsea.jpg", broken, tmp_path / "missing.png",
                       folder / "coffee.png", "-o", out, "--model", TINY, "--layer", "3",
                       "--batch-size", "4", "--estimation-samples", "16", "-q", *REDUCED)
    assert rc == 1
    assert "explained" not in err and "it/s" not in err and "image/s" not in err  # quiet
    records = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in records] == ["ok", "failed", "failed", "ok"]
    for stem in STEMS:
        m = np.load(out / f"{stem}.npy")
        assert m.shape == tuple(sizes[stem]) and m.dtype == np.float32
    assert records[0]["target"]["name"] in ("sky", "fur", "cup", "metal", "leaf")
    assert not (out / "broken.npy").exists()


def test_python_one_liner_with_arrays_and_targets(stats_cache, tmp_path):
    imgs = builtin_photos(["coffee", "astronaut"])
    grey = imgs["astronaut"].mean(-1).astype(np.uint8)  # a grey array is accepted too
    records = explain_images(
        [("coffee", imgs["coffee"]), ("astronaut", grey)], model=TINY, layer="3",
        target=["cup", 4], estimation_samples=16, batch_size=2, out_dir=tmp_path,
        options=SMALL, progress=False,
    )
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert [r["target"]["index"] for r in records] == [2, 4]
    assert np.load(tmp_path / "astronaut.npy").shape == grey.shape
    assert all(r["gan_trained"] is True for r in records)  # SMALL trains the GAN 1 epoch
    assert "no GAN" not in (tmp_path / "index.html").read_text()


def test_gallery_says_when_stage_2_was_skipped(stats_cache, tmp_path):
    """Without stage 2 (gan_epochs 0, as in the default consensus) the mask column holds the
    GAN's initial mask, stage 3's prior: the record and the gallery say so."""
    photo = builtin_photos(["coffee"])["coffee"]
    records = explain_images([("coffee", photo)], model=TINY, layer="3", estimation_samples=16,
                             out_dir=tmp_path, options={**SMALL, "gan_epochs": 0},
                             progress=False)
    assert records[0]["status"] == "ok" and records[0]["gan_trained"] is False
    page = (tmp_path / "index.html").read_text()
    assert "no GAN (stage 2 skipped)" in page and "prior mask" in page
    assert "GAN mask 0" not in page


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["explain", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for word in ("--model", "--weights", "--layer", "--target", "--estimation", "--preset",
                 "--batch-size", "--device", "--seed", "--out", "--quiet", "examples:"):
        assert word in text
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("inputiba ")
