"""``inputiba evaluate`` end to end on small fixtures the tests write (and the built-in quokka)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from PIL import Image

from inputiba.cli import main

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                             nn.Flatten(), nn.Linear(16, 5))
    """
)


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / "tiny_eval_model.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(mod))
    return "tiny_eval_model:make"


def _write_set(tmp_path):
    rng = np.random.default_rng(0)
    images, maps = tmp_path / "images", tmp_path / "maps"
    images.mkdir()
    maps.mkdir()
    for stem in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
            images / f"{stem}.png"
        )
        m = np.zeros((20, 30), np.float32)
        m[2:8, 3:12] = 1.0
        np.save(maps / f"{stem}.npy", m)
    np.save(maps / "a.feature.npy", np.zeros((3, 3), np.float32))  # not a map: ignored
    (images / "a.json").write_text(
        json.dumps(
            {
                "shapes": [
                    {"label": "thing", "shape_type": "rectangle", "points": [[3, 2], [12, 8]]}
                ],
                "imageHeight": 20,
                "imageWidth": 30,
            }
        )
    )
    return images, maps


def test_evaluate_folder_with_labelme_boxes(tmp_path, tiny_model, capsys):
    images, maps = _write_set(tmp_path)
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        str(maps),
        "--images",
        str(images),
        "--model",
        tiny_model,
        "--out",
        str(out),
    ]
    argv += ["--min-probability", "0", "--target", "1", "--step", "0.1", "--quiet"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_maps"] == 2
    m = summary["metrics"]
    assert m["deletion_auc"]["n"] == 2 and m["insertion_auc"]["n"] == 2
    assert 0 <= m["deletion_auc"]["mean"] <= 1 and m["deletion_auc"]["std"] >= 0
    # the map is exactly the box: EHR at its maximum 1, pointing hit, all mass inside
    assert m["ehr"]["mean"] == pytest.approx(1.0) and m["ehr"]["n"] == 1
    assert m["hit"]["mean"] == 1.0 and m["mass_in_box"]["mean"] == pytest.approx(1.0)
    assert m["mass_in_box_ratio"]["mean"] == pytest.approx(600 / 54)
    # b has no boxes: reported and skipped by the box metrics, still scored by the curves
    assert {"name": "b", "reason": "no boxes"} in summary["skipped"]["EffectiveHeatRatio"]
    b = json.loads((out / "per_image" / "b.json").read_text())
    assert "ehr" not in b and "deletion_auc" in b and b["skipped"][0]["metric"] == "boxes"
    a = json.loads((out / "per_image" / "a.json").read_text())
    assert a["target"] == 1 and len(a["deletion_curve"]["scores"]) == 11
    assert (out / "curves" / "a.png").stat().st_size > 1000 and (out / "curves.png").exists()
    assert not (out / "per_image" / "a.feature.json").exists()


def test_evaluate_mismatched_shape_is_a_clear_error(tmp_path, tiny_model, capsys):
    images, maps = _write_set(tmp_path)
    np.save(maps / "b.npy", np.zeros((10, 10), np.float32))
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        str(maps),
        "--images",
        str(images),
        "--model",
        tiny_model,
        "--out",
        str(out),
    ]
    argv += ["--min-probability", "0", "--target", "0", "--no-plots", "--quiet", "--step", "0.25"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "b.npy is 10 x 10 but its image is 20 x 30" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"][0]["name"] == "b"
    assert summary["metrics"]["deletion_auc"]["n"] == 1  # a still evaluated


def test_evaluate_probability_filter_and_rescaling(tmp_path, tiny_model):
    images, maps = _write_set(tmp_path)
    np.save(maps / "a.npy", np.load(maps / "a.npy") * 50 - 3)  # raw scores outside [0, 1]
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        str(maps),
        "--images",
        str(images),
        "--model",
        tiny_model,
        "--out",
        str(out),
    ]
    argv += [
        "--min-probability",
        "0.99",
        "--target",
        "0",
        "--no-plots",
        "--quiet",
        "--step",
        "0.25",
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["skipped"]["probability"]) == 2
    assert summary["metrics"]["deletion_auc"]["n"] == 0
    argv[argv.index("0.99")] = "0"
    assert main(argv) == 0
    a = json.loads((out / "per_image" / "a.json").read_text())
    assert a["rescaled_from"] == [-3.0, 47.0] and a["ehr"] == pytest.approx(1.0)


def test_evaluate_voc_boxes_with_class_index(tmp_path, tiny_model):
    images, maps = _write_set(tmp_path)
    (images / "a.json").unlink()
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    (boxes / "a.xml").write_text(
        "<annotation><object><name>n0002</name><bndbox><xmin>4</xmin><ymin>3</ymin>"
        "<xmax>12</xmax><ymax>8</ymax></bndbox></object></annotation>"
    )
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"0": ["n0001", "zero"], "2": ["n0002", "two"]}))
    out = tmp_path / "eval"
    argv = ["evaluate", str(maps), "--images", str(images), "--boxes", str(boxes), "--class-index"]
    argv += [str(index), "--model", tiny_model, "--out", str(out), "--metrics", "ehr", "pointing"]
    argv += ["--min-probability", "0", "--quiet"]
    assert main(argv) == 0
    a = json.loads((out / "per_image" / "a.json").read_text())
    assert a["target"] == 2 and a["target_source"] == "boxes" and a["ehr"] == pytest.approx(1.0)


def test_evaluate_builtin_quokka_without_model(tmp_path):
    from inputiba.data.datasets import boxes_to_mask, quokka

    q = quokka()
    maps = tmp_path / "maps"
    maps.mkdir()
    np.save(maps / "quokka.npy", boxes_to_mask(q.boxes, q.image.shape[:2]).astype(np.float32))
    np.save(maps / "unknown.npy", np.zeros((4, 4), np.float32))
    out = tmp_path / "eval"
    argv = ["evaluate", str(maps), "--builtin", "--target", "104", "--metrics", "ehr", "mass"]
    argv += ["--min-probability", "0", "--ehr-max-box-fraction", "0", "--out", str(out), "--quiet"]
    assert main(argv) == 1  # unknown.npy is not in the set: reported as failed
    s = json.loads((out / "summary.json").read_text())
    assert s["metrics"]["ehr"]["mean"] == pytest.approx(1.0)
    assert s["metrics"]["mass_in_box"]["mean"] == pytest.approx(1.0)
    assert s["failed"][0]["name"] == "unknown"


def test_evaluate_bad_folder(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope"), "--builtin"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_python_evaluate_maps_matches_the_cli_and_takes_items(tmp_path, tiny_model):
    """The library function does what the command does, in one call, also on in-memory items
    and a model object (no CLI involved)."""
    import importlib

    from inputiba.data.maps import EvalItem
    from inputiba.metrics.evaluate import EvaluationSettings, evaluate_maps

    images, maps = _write_set(tmp_path)
    argv = ["evaluate", str(maps), "--images", str(images), "--model", tiny_model, "--out",
            str(tmp_path / "cli"), "--min-probability", "0", "--target", "1", "--step", "0.1",
            "--quiet", "--no-plots"]
    assert main(argv) == 0
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    settings = EvaluationSettings(step=0.1, min_probability=0, plots=False, progress=False)
    res = evaluate_maps(maps, tmp_path / "py", images=images, model=tiny_model, target=1,
                        settings=settings)
    assert res.ok and res.summary["metrics"] == cli["metrics"]
    assert json.loads((tmp_path / "py" / "summary.json").read_text()) == res.summary

    net = importlib.import_module(tiny_model.split(":")[0]).make().eval()
    pixels = {s: np.asarray(Image.open(images / f"{s}.png").convert("RGB")) for s in "ab"}
    box = np.array([[3, 2, 12, 8]], np.float32)
    items = [EvalItem("a", pixels["a"], boxes=box), EvalItem("b", pixels["b"])]
    from inputiba.models.image import Preprocess

    res2 = evaluate_maps(maps, None, items=items, model=(net, Preprocess()), target=1,
                         settings=settings)
    assert [r["name"] for r in res2.records] == ["a", "b"] and res2.out is None
    assert res2.summary["metrics"]["ehr"]["mean"] == pytest.approx(1.0)
    assert res2.summary["metrics"]["deletion_auc"]["n"] == 2


def test_evaluation_settings_are_checked():
    from inputiba.errors import ConfigError
    from inputiba.metrics.evaluate import EvaluationSettings

    with pytest.raises(ConfigError, match="unknown metrics"):
        EvaluationSettings(metrics=["deletion", "auc"])
    with pytest.raises(ConfigError, match="whole number of pixels"):
        EvaluationSettings(step=2.5)
    assert EvaluationSettings(step=10.0).step == 10
