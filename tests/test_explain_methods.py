"""``inputiba explain --method``: the baselines write the same output contract as InputIBA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inputiba.cli import main

TINY = f"{Path(__file__).parent / '_tiny_model.py'}:factory"


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from PIL import Image

    from inputiba.data.assets import builtin_photos

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(builtin_photos(["chelsea"])["chelsea"]).save(folder / "chelsea.png")
    return folder / "chelsea.png"


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients", "random"])
def test_explain_with_a_baseline_method(photo, tmp_path, method):
    out = tmp_path / method
    rc = main(["explain", str(photo), "--model", TINY, "--method", method, "-o", str(out),
               "-q", "--device", "cpu", "--target", "2"])
    assert rc == 0
    m = np.load(out / "chelsea.npy")
    assert m.dtype.kind == "f" and m.shape == (300, 451)  # the photo's size
    assert m.min() >= 0 and m.max() <= 1 and m.max() > 0.9
    assert not (out / "chelsea.feature.npy").exists()  # no InputIBA stages for a baseline
    rec = json.loads((out / "results.json").read_text())
    rec = rec["images"][0] if isinstance(rec, dict) else rec[0]
    assert rec["status"] == "ok" and rec["method"] == method and rec["target"]["index"] == 2


def test_explain_unknown_method_is_a_clear_error(photo, tmp_path, capsys):
    rc = main(["explain", str(photo), "--model", TINY, "--method", "gradcma", "-o",
               str(tmp_path), "-q"])
    assert rc != 0
    assert "Unknown method 'gradcma'; choose from inputiba, iba, gradcam" in capsys.readouterr().err


def test_a_layer_the_method_cannot_use_stops_the_run_once(photo, tmp_path, capsys):
    # Grad-CAM at the tiny CNN's logits (layer "8", shape (1, 5)): the same ModelError for
    # every image, so the run stops at the first batch with one error line instead of
    # failing each image (it used to print one "explanation failed" line per image)
    photos = [photo, photo.with_name("copy1.png"), photo.with_name("copy2.png")]
    for p in photos[1:]:
        p.write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    rc = main(["explain", *map(str, photos), "--model", TINY, "--method", "gradcam", "--layer",
               "8", "--batch-size", "1", "-o", str(out), "-q", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("Grad-CAM needs a layer with a (B, C, h, w) output") == 1, err
    assert "explanation failed" not in err and err.startswith("inputiba: error:")
    assert not any(out.glob("*.npy"))
