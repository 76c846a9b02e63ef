"""Dataset-scale runs: listing and splitting datasets, resume after a crash, failures, torchrun.

The dataset is a small ImageNet-layout folder of real photos (crops of the built-in photos, three
classes) explained by the tiny CNN of ``tests/_tiny_model.py`` at reduced InputIBA steps. The
two-process run goes through the real launcher (``python -m torch.distributed.run``, gloo on
the CPU) and the real CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import inputiba
from inputiba import LayerStatistics
from inputiba.cli import main
from inputiba.data.assets import builtin_photos
from inputiba.data.folders import list_dataset, split_dataset
from inputiba.workflows.dataset import accelerated, explain_dataset
from inputiba.workflows.explain import ExplainError

TESTS = Path(__file__).resolve().parent
SRC = Path(inputiba.__file__).resolve().parents[1]
TINY = f"{TESTS / '_tiny_model.py'}:factory"
SMALL = {"feat_steps": 2, "feat_draws": 2, "gan_epochs": 1, "gan_dataset_size": 8,
         "gan_subset_size": 4, "gan_batch_size": 8, "input_steps": 3, "input_draws": 2}
CLASSES = ["sky", "fur", "cup", "metal", "leaf"]
WNIDS = [f"n{k:08d}" for k in range(len(CLASSES))]
PER_CLASS = 3  # images in each of the first three classes: 9 items


def _write_imagenet(root: Path, per_class: int = PER_CLASS, n_classes: int = 3) -> Path:
    photos = list(builtin_photos().values())
    root.mkdir(parents=True, exist_ok=True)
    index = {str(k): [w, n] for k, (w, n) in enumerate(zip(WNIDS, CLASSES, strict=True))}
    (root / "imagenet_class_index.json").write_text(json.dumps(index))
    k = 0
    for c in range(n_classes):
        d = root / "images" / "val" / WNIDS[c]
        d.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            img = photos[k % len(photos)]
            h, w = img.shape[:2]
            crop = img[(j * h) // 8:h - (j * h) // 8, (c * w) // 10:w - (c * w) // 10]
            Image.fromarray(crop).resize((64, 48)).save(d / f"img{c}{j}.JPEG", quality=90)
            k += 1
    return root


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(dataset folder, estimation folder, statistics cache)."""
    base = tmp_path_factory.mktemp("data")
    ds = _write_imagenet(base / "ds")
    est = base / "est"
    est.mkdir()
    for j, img in enumerate(list(builtin_photos().values())[:8]):
        Image.fromarray(img).resize((48, 48)).save(est / f"e{j}.png")
    cache = base / "cache"
    mp = pytest.MonkeyPatch()
    mp.setenv("INPUTIBA_CACHE", str(cache))
    yield ds, est, cache
    mp.undo()


def _kwargs(est: Path, **extra):
    return {"model": TINY, "layer": "2", "estimation": est, "estimation_samples": 8,
            "options": SMALL, "batch_size": 2, "seed": 0, "progress": False, "gallery": False,
            **extra}


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted one-process run over the whole dataset."""
    ds, est, _ = data
    out = tmp_path_factory.mktemp("reference")
    summary = explain_dataset(ds, out_dir=out, **_kwargs(est, gallery=True, gallery_limit=4))
    return out, summary


def _maps(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(out.glob("*.npy"))}


def _record_lines(out: Path) -> list[dict]:
    rows = []
    for p in sorted((out / "records").glob("rank*.jsonl")):
        rows += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return rows


# --------------------------------------------------------------------------------------------
# datasets


def test_list_dataset_imagenet_plain_and_subset(data, tmp_path):
    ds, _, _ = data
    items = list_dataset(ds)
    assert [it.key for it in items][:3] == [f"{WNIDS[0]}/img0{j}.JPEG" for j in range(3)]
    assert [it.label for it in items] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [it.index for it in items] == list(range(9))
    # the same images as a plain folder: no labels, the class folder as group
    plain = list_dataset(ds / "images" / "val")
    assert [it.label for it in plain] == [None] * 9
    assert [it.group for it in plain] == [w for w in WNIDS[:3] for _ in range(3)]
    # a subset file: indices and names (key, file name, stem), comments; original indices kept
    sub = tmp_path / "subset.txt"
    sub.write_text(f"# a subset\n7\n{WNIDS[0]}/img01.JPEG\nimg12.JPEG  # by file name\nimg20\n")
    picked = list_dataset(ds, subset=sub)
    assert [it.index for it in picked] == [1, 5, 6, 7]
    sub.write_text("[2, \"img10\"]")
    assert [it.index for it in list_dataset(ds, subset=sub)] == [2, 3]
    with pytest.raises(ValueError, match="out of range.*9 images"):
        list_dataset(ds, subset=[9])
    with pytest.raises(ValueError, match="'nope' matches no image"):
        list_dataset(ds, subset=["nope"])


def test_split_dataset_per_class_seeded(data, tmp_path):
    ds, _, _ = data
    res = split_dataset(ds, tmp_path / "a", n_estimation=2, n_attribution=1, seed=3)
    again = split_dataset(ds, tmp_path / "b", n_estimation=2, n_attribution=1, seed=3,
                          mode="list")
    assert res == {k: again[k] for k in res}
    assert len(res["estimation"]) == 6 and len(res["attribution"]) == 3
    assert not set(res["estimation"]) & set(res["attribution"])
    for w in WNIDS[:3]:
        assert sum(k.startswith(w) for k in res["estimation"]) == 2
        assert sum(k.startswith(w) for k in res["attribution"]) == 1
    # each set is an ImageNet folder again, with labels from its folders
    attr = list_dataset(tmp_path / "a" / "attribution")
    assert [it.key for it in attr] == res["attribution"]
    assert [it.label for it in attr] == [0, 1, 2]
    # another seed, another split (of 3 images per class, 1 for attribution: 27 choices)
    other = split_dataset(ds, tmp_path / "c", 2, 1, seed=4, mode="list")
    assert other["attribution"] != res["attribution"]
    # the CLI, flat: 3 + 3 files, and a rerun of the same split succeeds
    for _ in range(2):
        assert main(["split-dataset", str(ds), str(tmp_path / "d"), "--estimation", "1",
                     "--attribution", "1", "--layout", "flat", "-q"]) == 0
    assert len(list((tmp_path / "d" / "estimation").iterdir())) == 3
    assert len(list((tmp_path / "d" / "attribution").iterdir())) == 3


# --------------------------------------------------------------------------------------------
# resume, failures


def test_reference_run_outputs(data, reference):
    ds, _, _ = data
    out, summary = reference
    assert (summary.done, summary.skipped, summary.failed, summary.total) == (9, 0, 0, 9)
    results = json.loads((out / "results.json").read_text())
    assert [r["item"] for r in results] == [it.key for it in list_dataset(ds)]
    # targets come from the folders
    assert [r["target"]["index"] for r in results] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(r["status"] == "ok" for r in results)
    assert len(_maps(out)) == 9 * 3  # map, feature, gan per item
    assert (out / "statistics.pt").is_file()
    page = (out / "index.html").read_text()  # at most gallery_limit images, said so
    assert "showing 4 of 9 images" in page and page.count("<img ") == 4 * 4
    assert (out / "failures.jsonl").read_text() == ""


def test_resume_after_crash_matches_uninterrupted_run(data, reference, tmp_path, monkeypatch):
    ds, est, _ = data
    ref_out, _ = reference
    out = tmp_path / "out"
    calls: list[list[int]] = []
    import inputiba.workflows.explain as wf  # both explain loops call its _explain_chunk

    real_chunk = wf._explain_chunk

    def crashing(explainer, rm, loaded, *args, **kwargs):
        if len(calls) == 2:  # the third batch: the process dies (after 4 items)
            raise KeyboardInterrupt
        calls.append([item.index for item in loaded])
        return real_chunk(explainer, rm, loaded, *args, **kwargs)

    monkeypatch.setattr(wf, "_explain_chunk", crashing)
    with pytest.raises(KeyboardInterrupt):
        explain_dataset(ds, out_dir=out, **_kwargs(est))
    assert len(_record_lines(out)) == 4

    def counting(explainer, rm, loaded, *args, **kwargs):
        calls.append([item.index for item in loaded])
        return real_chunk(explainer, rm, loaded, *args, **kwargs)

    monkeypatch.setattr(wf, "_explain_chunk", counting)
    summary = explain_dataset(ds, out_dir=out, **_kwargs(est))
    assert (summary.done, summary.skipped, summary.failed) == (5, 4, 0)
    explained = [i for batch in calls for i in batch]
    assert sorted(explained) == list(range(9))  # none lost, none done twice
    lines = _record_lines(out)
    assert sorted(r["index"] for r in lines) == list(range(9))
    # the same maps as the uninterrupted run (per-item seeds: the batching does not matter)
    ref, got = _maps(ref_out), _maps(out)
    assert ref.keys() == got.keys()
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=1e-6, err_msg=name)
    # a third run has nothing left to do
    calls.clear()
    again = explain_dataset(ds, out_dir=out, **_kwargs(est))
    assert (again.done, again.skipped, again.failed, calls) == (0, 9, 0, [])
    # an item whose output file disappeared is redone
    (out / f"{WNIDS[1]}__img11.npy").unlink()
    third = explain_dataset(ds, out_dir=out, **_kwargs(est))
    assert (third.done, third.skipped, calls) == (1, 8, [[4]])
    # other settings in the same folder are refused
    with pytest.raises(ExplainError, match="other settings.*seed"):
        explain_dataset(ds, out_dir=out, **_kwargs(est, seed=1))


def test_corrupt_image_is_recorded_and_the_rest_completes(data, tmp_path):
    _, est, _ = data
    folder = tmp_path / "photos"
    folder.mkdir()
    for j, img in enumerate(list(builtin_photos().values())[:3]):
        Image.fromarray(img).resize((40, 40)).save(folder / f"p{j}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    # also the reduced-precision, channels-last path of a run (bf16 autocast on the CPU)
    fast = {"layout": "class", "precision": "bf16", "channels_last": True}
    summary = explain_dataset(folder, out_dir=out, **_kwargs(est, **fast))
    assert (summary.done, summary.failed, summary.total) == (3, 1, 4)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [f["item"] for f in failures] == ["broken.jpg"]
    assert "broken.jpg" in failures[0]["error"]
    assert all((out / f"p{j}.npy").is_file() for j in range(3))
    assert not list(out.glob("broken*.npy"))
    results = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in results] == ["failed", "ok", "ok", "ok"]
    # targets: a plain folder has no classes, so each image's predicted class
    assert all(r["target"]["index"] == r["predicted"]["index"] for r in results[1:])
    assert results[1]["settings"]["precision"] == "bf16"
    assert all(0 <= np.load(out / f"p{j}.npy").min() <= np.load(out / f"p{j}.npy").max() <= 1
               for j in range(3))
    # a rerun retries the failed item only; it fails again, the rest is skipped
    again = explain_dataset(folder, out_dir=out, **_kwargs(est, **fast))
    assert (again.done, again.skipped, again.failed) == (0, 3, 1)
    assert len((out / "failures.jsonl").read_text().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# two processes (torchrun, gloo)


def test_two_process_torchrun_covers_every_item_once(data, reference, tmp_path):
    ds, est, cache = data
    ref_out, _ = reference
    out = tmp_path / "out"
    env = {**os.environ, "INPUTIBA_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    sets = [a for k, v in SMALL.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "inputiba.cli", "explain-dataset", str(ds), "-m", TINY, "-l", "2",
           "-e", str(est), "--estimation-samples", "8", "-b", "2", "--seed", "0",
           "--no-gallery", "-q", "-o", str(out), "--device", "cpu", *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = _record_lines(out)
    by_rank = {r: sorted(x["index"] for x in lines if x["rank"] == r) for r in (0, 1)}
    assert by_rank == {0: [0, 2, 4, 6, 8], 1: [1, 3, 5, 7]}  # sharded by rank, each once
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["world_size"], summary["total"]) == (9, 2, 9)
    # rank 0 merged every item, in dataset order, and the maps equal the one-process run's
    results = json.loads((out / "results.json").read_text())
    assert [r["item"] for r in results] == [it.key for it in list_dataset(ds)]
    ref, got = _maps(ref_out), _maps(out)
    assert ref.keys() == got.keys()
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=1e-6, err_msg=name)
    # the statistics were estimated once and shared: one file, equal to the reference's
    mine, theirs = LayerStatistics.load(out / "statistics.pt"), \
        LayerStatistics.load(ref_out / "statistics.pt")
    assert mine.n == theirs.n == 8 and torch.equal(mine.mean, theirs.mean)


# --------------------------------------------------------------------------------------------
# mixed precision


def test_mixed_precision_maps_within_tolerance(digits_model, digits_stats, digits):
    """Autocast maps stay within the stated tolerance of full precision: mean absolute
    difference < 0.01 and largest < 0.25 (maps in [0, 1]), pixel ranking kept (Spearman > 0.98
    per map). Runs fp16 on CUDA when present, else bfloat16 on the CPU (CUDA is absent in this
    suite's usual environment; there bf16 measured mean 0.002, max 0.07, Spearman 0.998)."""
    from scipy.stats import spearmanr

    from inputiba import InputIBA

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = "fp16" if device == "cuda" else "bf16"
    model = digits_model.to(device)
    x = digits[2][:4].to(device)
    ex = InputIBA(model, "features.4", digits_stats, preset="fast", input_steps=10,
                  gan_epochs=1)
    full = ex.attribute(x, target=digits[3][:4].tolist(), seed=0, return_details=True)
    with accelerated(ex, precision, device):
        low = ex.attribute(x, target=digits[3][:4].tolist(), seed=0, return_details=True)
    assert low.attribution.dtype == torch.float32
    a, b = full.attribution.float().cpu(), low.attribution.float().cpu()
    assert not torch.equal(a, b)  # the low-precision path really ran
    assert (a - b).abs().mean() < 0.01 and (a - b).abs().max() < 0.25
    for i in range(a.shape[0]):
        rho = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy())[0]
        assert rho > 0.98, (i, rho)
    model.cpu()


def test_close_waits_for_every_rank_only_after_a_finished_run(monkeypatch):
    """A finished rank waits at a barrier before destroying the group (a rank that tore its
    connections down first made another abort at exit, about 1 run in 6 of the torchrun test
    under load); a failed rank destroys at once (the others may never reach the barrier)."""
    import torch.distributed as dist

    from inputiba.workflows.distributed import DistributedContext

    calls: list[str] = []
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    DistributedContext(0, 2, 0, initialised_here=True).close()
    assert calls == ["barrier", "destroy"]
    calls.clear()
    DistributedContext(1, 2, 1, initialised_here=True).close(wait=False)
    assert calls == ["destroy"]
    calls.clear()
    DistributedContext(0, 2, 0, initialised_here=False).close()  # a group made by the caller
    assert calls == []
