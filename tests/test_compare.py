"""``inputiba compare``: resumable maps, the table, the report; end to end on the built-in set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from inputiba.core.config import DEFAULT_PRESET
from inputiba.methods.image import get_explainer
from inputiba.workflows.compare import (
    CompareItem,
    choose_targets,
    comparison_table,
    compute_maps,
    figure_grid,
    write_report,
)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _prep(image: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    return torch.nn.functional.interpolate(t[None], size=(16, 16), mode="bilinear")[0] * 2 - 1


@pytest.fixture()
def items() -> list[CompareItem]:
    rng = np.random.default_rng(0)
    return [
        CompareItem(f"img{i}", rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8), [(1,)])
        for i in range(3)
    ]


def test_compute_maps_is_resumable_and_saves_float_maps(tmp_path, items):
    model = _Tiny().eval()
    calls = []

    def factory():
        calls.append(1)
        return get_explainer("gradcam", model, "conv")

    targets = {it.name: 1 for it in items[:2]}  # the third image is filtered out
    timing = compute_maps(factory, "gradcam", model, _prep, items, targets, tmp_path,
                          batch_size=2, progress=False)
    assert sorted(timing) == ["img0", "img1"] and len(calls) == 1
    m = np.load(tmp_path / "img1.npy")
    assert m.dtype == np.float32 and m.shape == (21, 30)  # the image's original size
    assert m.min() >= 0 and m.max() <= 1 and np.isclose(m.max(), 1, atol=0.05)
    before = (tmp_path / "img0.npy").stat().st_mtime_ns
    compute_maps(factory, "gradcam", model, _prep, items, targets, tmp_path, progress=False)
    assert len(calls) == 1 and (tmp_path / "img0.npy").stat().st_mtime_ns == before
    (tmp_path / "img0.npy").unlink()  # an interrupted run: only the missing map is redone
    compute_maps(factory, "gradcam", model, _prep, items, targets, tmp_path, progress=False)
    assert len(calls) == 2 and (tmp_path / "img0.npy").exists()


def test_choose_targets_prefers_box_classes_and_is_stable(tmp_path, items):
    model = _Tiny().eval()
    path = tmp_path / "targets.json"
    t = choose_targets(model, _prep, items, path)
    assert {v["target"] for v in t.values()} == {1} and t["img0"]["source"] == "boxes"
    free = [CompareItem("free", items[0].image)]
    t2 = choose_targets(model, _prep, free, path)
    with torch.no_grad():
        assert t2["free"]["target"] == int(model(_prep(items[0].image)[None]).argmax())
    assert json.loads(path.read_text())["img0"]["target"] == 1


def test_comparison_table_marks_the_best_per_direction():
    s = {
        "a": {"metrics": {"deletion_auc": {"mean": 0.1, "std": 0.01, "n": 2},
                          "insertion_auc": {"mean": 0.5, "std": 0.1, "n": 2}}},
        "b": {"metrics": {"deletion_auc": {"mean": 0.2, "std": 0.02, "n": 2},
                          "insertion_auc": {"mean": 0.7, "std": None, "n": 1}}},
    }
    table = comparison_table(s, {"a": 1.5})
    rows = table.strip().splitlines()
    assert rows[0].startswith("| method | Deletion AUC (lower better), n=2 |")
    assert "| a | **0.100 ± 0.010** | 0.500 ± 0.100 | 1.50 |" in rows
    assert "| b | 0.200 ± 0.020 | **0.700** (n=1) | n/a |" in rows
    # two images per column: the table says the spreads are not reliable
    assert "Fewer than 10 images for Deletion AUC, Insertion AUC" in table


def test_grid_and_report(tmp_path, items):
    for method in ("m1", "m2"):
        (tmp_path / "maps" / method).mkdir(parents=True)
        for it in items:
            np.save(tmp_path / "maps" / method / f"{it.name}.npy",
                    np.random.default_rng(0).random(it.image.shape[:2]).astype(np.float32))
    figure_grid(items, ["m1", "m2"], tmp_path / "maps", tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 1000
    table = comparison_table({"m1": {"metrics": {"hit": {"mean": 1.0, "std": 0.0, "n": 3}}}})
    write_report(tmp_path, table, ["m1", "m2"], {"model": "tiny"})
    html = (tmp_path / "report.html").read_text()
    assert "<table>" in html and "<b>1.000 ± 0.000</b>" in html and "grid.png" in html


@pytest.mark.slow
def test_cli_compare_end_to_end_on_the_builtin_set(tmp_path):
    from inputiba.cli import main

    out = tmp_path / "cmp"
    argv = ["compare", "--methods", "gradcam", "random", "--out", str(out), "--step", "0.05",
            "--quiet"]
    assert main(argv) == 0
    table = (out / "comparison.md").read_text()
    assert "| gradcam |" in table and "| random |" in table
    summ = {m: json.loads((out / "eval" / m / "summary.json").read_text()) for m in
            ("gradcam", "random")}
    # the defaults: every built-in photo for deletion/insertion (the model's class), the
    # photos with boxes of that class for the box metrics; sensitivity-N is opt-in
    metrics = summ["gradcam"]["metrics"]
    assert metrics["deletion_auc"]["n"] == metrics["insertion_auc"]["n"] == 14
    assert 3 <= metrics["mass_in_box"]["n"] <= 5 and "sensitivity_n" not in metrics
    assert "Deletion AUC (lower better), n=14" in table
    # Grad-CAM's mass in the boxes beats noise's
    assert metrics["mass_in_box"]["mean"] > summ["random"]["metrics"]["mass_in_box"]["mean"]
    stamp = (out / "maps" / "gradcam" / "2011_000025.npy").stat().st_mtime_ns
    assert main(argv) == 0  # resumed: nothing recomputed
    assert (out / "maps" / "gradcam" / "2011_000025.npy").stat().st_mtime_ns == stamp


def test_compare_methods_in_one_python_call(tmp_path, items):
    """The whole comparison without the CLI: in-memory items and a model object."""
    from inputiba.metrics.evaluate import EvaluationSettings
    from inputiba.workflows.compare import CompareSettings, compare_methods

    for it in items:
        it.boxes = np.array([[2, 2, 20, 15]], np.float32)
    settings = CompareSettings(
        methods=["gradcam", "random"], gradcam_layer="conv", progress=False,
        evaluation=EvaluationSettings(step=0.25, min_probability=0, plots=False, progress=False),
    )
    res = compare_methods(tmp_path, items=items, model=(_Tiny().eval(), _prep), settings=settings)
    assert set(res.summaries) == {"gradcam", "random"} and set(res.targets) == {"img0", "img1",
                                                                                 "img2"}
    for summary in res.summaries.values():
        assert summary["metrics"]["deletion_auc"]["n"] == 3
        assert summary["metrics"]["mass_in_box"]["n"] == 3
    assert (tmp_path / "comparison.md").read_text().endswith(res.table.split("\n\n", 1)[1])
    assert (tmp_path / "report.html").exists() and (tmp_path / "grid.png").exists()
    with pytest.raises(ValueError, match="unknown method"):
        compare_methods(tmp_path, items=items, model=(_Tiny().eval(), _prep),
                        settings=CompareSettings(methods=["gradcm"]))


def test_a_rerun_with_other_settings_does_not_mix_maps(tmp_path, items):
    """Maps made with one seed are not reused for a run with another: the second run stops
    with an error naming the setting; the same settings resume."""
    from inputiba.errors import ConfigError
    from inputiba.metrics.evaluate import EvaluationSettings
    from inputiba.workflows.compare import CompareSettings, compare_methods

    def run(seed: int):
        settings = CompareSettings(
            methods=["random"], seed=seed, progress=False, inputiba_options={"input_steps": 3},
            evaluation=EvaluationSettings(step=0.25, min_probability=0, plots=False,
                                          progress=False))
        return compare_methods(tmp_path, items=items, model=(_Tiny().eval(), _prep),
                               settings=settings)

    res = run(0)
    assert f"InputIBA preset {DEFAULT_PRESET}, input_steps=3." in res.table.splitlines()[0]
    recorded = json.loads((tmp_path / "maps" / "random" / "settings.json").read_text())
    assert recorded["seed"] == 0 and recorded["model"] == "_Tiny"
    before = np.load(tmp_path / "maps" / "random" / "img0.npy")
    with pytest.raises(ConfigError, match=r"random maps in .* other settings \(seed 0 -> 1\)"):
        run(1)
    run(0)  # the same settings: resumed, nothing changed
    assert np.array_equal(np.load(tmp_path / "maps" / "random" / "img0.npy"), before)

    class _Other(_Tiny):
        pass

    with pytest.raises(ConfigError, match=r"targets in .* \(model '_Tiny' -> '_Other', weights"):
        compare_methods(tmp_path, items=items, model=(_Other().eval(), _prep),
                        settings=CompareSettings(methods=["random"], progress=False))

    # the same architecture with other weights (a model object, not a weights file): refused
    retrained = _Tiny().eval()
    with torch.no_grad():
        retrained.fc.bias.add_(1.0)
    with pytest.raises(ConfigError, match=r"targets in .* \(weights '[0-9a-f]{16}' -> "
                                          r"'[0-9a-f]{16}'\)"):
        compare_methods(tmp_path, items=items, model=(retrained, _prep),
                        settings=CompareSettings(methods=["random"], progress=False))


def test_cli_compare_takes_inputiba_settings(monkeypatch, tmp_path):
    """``--set`` and ``--ensemble`` reach InputIBA's options."""
    from inputiba.cli import main
    from inputiba.workflows import compare as compare_mod

    seen = {}

    def fake(out, **kwargs):
        seen.update(kwargs["settings"].inputiba_options)
        raise SystemExit(0)

    monkeypatch.setattr(compare_mod, "compare_methods", fake)
    with pytest.raises(SystemExit):
        main(["compare", "--methods", "inputiba", "--ensemble", "2", "--set", "input_steps=5",
              "--out", str(tmp_path)])
    assert seen == {"ensemble": 2, "input_steps": 5}
