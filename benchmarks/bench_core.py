"""Speed, memory and map quality of InputIBA (the core library), printed, never asserted.

For each model and batch size, one subprocess runs the three stages at the chosen settings and
reports seconds per image by stage and the peak memory of that process (CPU: peak RSS; CUDA:
peak allocated). ``--scale`` runs that fraction of every stage's steps/epochs and scales the
times back up (the cost per step is constant), for slow configurations such as VGG16 on a CPU;
the table says when it did.

A second table gives each stage's floor: the number of network passes the stage makes (counted
as ``inputiba.core``'s loops make them, by kind and chunk size: stage 1 forward+backward passes
of the network after the layer, stage 2 forward passes up to the layer without gradients,
forward+backward passes with them and the critic's forward+backward passes (on the real and on
the fake batch at every critic step, on the fake batch at every generator step; the critic is
the original's network, part of the method's work), stage 3 forward+backward passes of the
whole network) times the median cost of one such pass, measured in the same process with the
same network copy and settings, after a warm-up; and the stage's time as a multiple of that
floor. Whatever a stage spends above its floor is not network passes (the optimisers, noise,
the generator's masking, copies).

The speed unit: after the attribution, the same process times one forward+backward pass of the
whole model (frozen weights, gradients to the inputs) on 10 images at 224 px (median of 5) and
gives the time per image in those units. The original 2021 code was timed against the same unit
(EfficientNet-Lite0, paper settings, one photo, two runs side by side on this machine kind:
347 s with a unit of 0.266 s, 303 s with 0.308 s), so the speed-up against it holds across
days and machines: its units per image over ours.

``--reference`` also explains the two photos the original 2021 code was run on (``chelsea`` and
``coffee``) with EfficientNet-Lite0 at the original settings (statistics from the 9 built-in
photos, as those runs) and prints the deletion and insertion AUC of this project's maps (over
``--seeds``) next to the original code's (its 4 runs stored in ``original_runs``), and how much
each stage's maps correlate across the two implementations and within each.

Examples:
    python benchmarks/bench_core.py                                  # EfficientNet-Lite0, B = 1, 4, 8
    python benchmarks/bench_core.py --models vgg16 --scale 0.1       # VGG16 features.17, extrapolated
    python benchmarks/bench_core.py --batch-sizes 1 --reference      # + AUCs vs the original's maps
    python benchmarks/bench_core.py --batch-sizes --reference --seeds 3   # AUCs only, 3 seeds
    python benchmarks/bench_core.py --device cuda --batch-sizes 1 8 32
    python benchmarks/bench_core.py --batch-sizes --agreement --set precision=bf16  # maps vs fp32
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

MODELS = {"effnet": ("efficientnet-lite0", "_blocks.5"), "vgg16": ("vgg16", "features.17")}
# runs of the original code on the same inputs (see original_runs/README.md)
ORIGINAL_RUNS = Path(__file__).resolve().parent / "original_runs"
TARGETS = {"chelsea": 285, "coffee": 967}
# (file suffix of the original's map, InputIBAResult field, title), one per stage
STAGES = [("feat_mask", "feature_map", "stage 1 (bits/pixel)"),
          ("gen_input_mask", "gan_mask", "GAN mask"), ("input_mask", "attribution", "InputIBA map")]


#: The original code's side-by-side runs: (seconds per image, the unit in the same process).
ORIGINAL_UNIT_RUNS = ((347.0, 0.266), (303.0, 0.308))


def unit_seconds(model: torch.nn.Module, device: str, size: int = 224, rows: int = 10,
                 repeats: int = 5) -> float:
    """Median seconds of one forward+backward pass of ``model`` (weights frozen, gradients to
    the inputs) on ``rows`` images of ``size`` px: the unit that makes speeds comparable
    across machines and days."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    x = torch.randn(rows, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    times = []
    try:
        for _ in range(repeats + 1):  # the first pass is a warm-up
            z = x.clone().requires_grad_(True)
            t0 = time.perf_counter()
            model(z).logsumexp(1).sum().backward()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return float(np.median(times[1:]))


def _scaled_config(preset: str, scale: float, overrides: dict | None = None):
    from inputiba.core.config import resolve_config

    cfg = resolve_config(preset, **(overrides or {}))
    if scale >= 1:
        return cfg
    return cfg.replace(
        feat_steps=max(1, round(cfg.feat_steps * scale)),
        gan_epochs=max(1, round(cfg.gan_epochs * scale)),
        input_steps=max(1, round(cfg.input_steps * scale)),
    )


def _estimation_batches(prep, n: int = 9):
    from inputiba.data.assets import builtin_photos

    x = prep.batch(list(builtin_photos().values()))
    return [x[:n]]


def pass_counts(cfg, batch: int) -> dict[str, Counter]:
    """Per stage, how many network passes of each kind and chunk size the stage makes for a
    batch of ``batch`` images (counted as the loops in ``inputiba.core`` make them).

    Keys of the counters: ``(kind, rows)``, kind ``"tail_fb"`` (forward+backward of the network
    after the layer), ``"head_f"`` (forward up to the layer, no gradient), ``"head_fb"``
    (forward+backward up to the layer) or ``"full_fb"`` (the whole network, forward+backward);
    ``rows`` the images in the pass (the loops cut B x draws rows into chunks of ``max_batch``);
    kind ``"critic_fb"``: the B critics' forward+backward on ``rows`` samples each (one call).
    """
    from inputiba.core.bottleneck import row_chunks

    def chunks(kind: str, rows: int, times: int, into: Counter) -> None:
        for sl in row_chunks(rows, cfg.max_batch):
            into[(kind, sl.stop - sl.start)] += times

    stage1, stage2, stage3 = Counter(), Counter(), Counter()
    chunks("tail_fb", batch * cfg.feat_draws, cfg.feat_steps, stage1)
    chunks("full_fb", batch * cfg.input_draws, cfg.input_steps, stage3)
    # stage 2 (core/gan.py fit_gan_mask): per epoch, batch i of the real samples gets a fake
    # batch of as many generator outputs per image; on every critic_iters-th batch the generator
    # trains: one pass with gradients when all B x n rows fit in one chunk (its output is also
    # the critic's fake batch), else a pass without gradients and one with, chunk by chunk
    g = cfg.gan
    n_batches = math.ceil(g.dataset_size / g.batch_size)
    for i in range(n_batches):
        n = min(g.batch_size, g.dataset_size - i * g.batch_size)
        rows = batch * n
        train_g = i % g.critic_iters == 0
        single = not cfg.max_batch or rows <= cfg.max_batch
        if train_g:
            chunks("head_fb", rows, g.epochs, stage2)
        if not (train_g and single):
            chunks("head_f", rows, g.epochs, stage2)
        # the critic step scores the real and the fake batch; the generator step the fake one
        stage2[("critic_fb", n)] += g.epochs * (3 if train_g else 2)
    return {"feature": stage1, "gan": stage2, "input": stage3}


def measure_pass_costs(stages, keys: set, target: torch.Tensor, cfg,
                       repeats: int = 5) -> dict:
    """Median seconds of one network pass of each ``(kind, rows)`` in ``keys``, run through
    the same callables the stages use (``ImageStages``: same network copy, precision,
    compilation), with the loss and backward the loops make."""
    from inputiba.core.bottleneck import row_chunks
    from inputiba.core.functional import classification_loss
    from inputiba.core.rng import SampleRNG

    x, r = stages.inputs, stages.features
    b = x.shape[0]
    cost = {}
    critic = stages.critic(SampleRNG(range(b), device=x.device)).train()
    for kind, rows in sorted(keys):
        samples = torch.arange(rows, device=x.device) % b
        times = []
        for _ in range(repeats):
            if kind == "tail_fb":
                # a chunk of stage 1's rows of this size (the tail's context belongs to it)
                chunk = next(sl for sl in row_chunks(b * cfg.feat_draws, cfg.max_batch)
                             if sl.stop - sl.start == rows)
                samples = torch.arange(chunk.start, chunk.stop, device=x.device) // cfg.feat_draws
                z = r[samples].detach().requires_grad_(True)
                t0 = time.perf_counter()
                out = stages.feature_tail(z.clone(), chunk)
                (classification_loss(out, target[samples]) / cfg.feat_draws).sum().backward()
            elif kind == "critic_fb":
                feats = r.detach().unsqueeze(1).expand(b, rows, *r.shape[1:]).contiguous()
                t0 = time.perf_counter()
                critic(feats).mean(1).sum().backward()
            elif kind == "full_fb":
                z = x[samples].detach().requires_grad_(True)
                t0 = time.perf_counter()
                out = stages.forward(z.clone(), samples)
                (classification_loss(out, target[samples]) / cfg.input_draws).sum().backward()
            else:
                inp = x[samples].detach().requires_grad_(kind == "head_fb")
                t0 = time.perf_counter()
                if kind == "head_f":
                    with torch.no_grad():
                        stages.gan_features(inp, samples)
                else:
                    f = stages.gan_features(inp * 1.0, samples)
                    f.backward(torch.ones_like(f))
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        cost[(kind, rows)] = float(np.median(times))
    return cost


def stage_floors(counts: dict[str, Counter], cost: dict) -> dict[str, float]:
    """Per stage, seconds of its network passes alone: count x median cost, summed."""
    return {stage: sum(n * cost[key] for key, n in c.items()) for stage, c in counts.items()}


def run_single(model_key: str, batch: int, preset: str, scale: float, device: str,
               overrides: dict | None = None) -> dict:
    from inputiba import InputIBA
    from inputiba.data.assets import builtin_photos
    from inputiba.models.image import load_model

    name, layer = MODELS[model_key]
    model, prep = load_model(name, device=device)  # VGG16: random weights (timing only)
    photos = list(builtin_photos().values())
    x = prep.batch([photos[i % len(photos)] for i in range(batch)]).to(device)
    cfg = _scaled_config(preset, scale, overrides)
    ex = InputIBA(model, layer, preset=cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex.estimate([x[: min(batch, 4)].cpu().to(device)], progress=False)
    full = _scaled_config(preset, 1.0, overrides)
    target = 0 if model_key == "vgg16" else None
    counts = pass_counts(full, batch)
    keys = {k for c in counts.values() for k in c}
    # the network passes the stages run, built as attribute() builds them
    from inputiba.modalities.image import ImageStages

    with ex._running():
        xm, t, _probs, _rng = ex._prepare(x, target, None)
        net, split = ex._network(xm[:1])
        stages = ImageStages(ex, net, split, xm)
        # warm-up: a process's first passes are 2-3x slower (and compile, with compile=True)
        t0 = time.perf_counter()
        measure_pass_costs(stages, keys, t, full, repeats=2)
        warmup = time.perf_counter() - t0
    # and one short attribute call: a process's first call ran stage 1 at 1.8x its later calls
    # (fresh memory for the network copy); compiled passes are kept (same weights)
    ex.config = cfg.replace(feat_steps=1, gan_epochs=1, input_steps=1)
    t0 = time.perf_counter()
    ex.attribute(x, target=target)
    warmup += time.perf_counter() - t0
    ex.config = cfg
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = ex.attribute(x, target=target, return_details=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    # the peak of the attribution, before the floor's and the unit's passes below
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with ex._running():
        cost = measure_pass_costs(stages, keys, t, full)
    unit = unit_seconds(model.eval(), device)
    floors = {k: v / batch for k, v in stage_floors(counts, cost).items()}
    factors = {
        "setup": 1.0,
        "feature": full.feat_steps / cfg.feat_steps,
        "gan": full.gan_epochs / cfg.gan_epochs if cfg.gan_epochs else 1.0,  # 0: no stage 2
        "input": full.input_steps / cfg.input_steps,
    }
    per_image = {k: v * factors[k] / batch for k, v in res.seconds.items()}
    return {
        "model": model_key, "batch": batch, "device": device, "scale": scale,
        "per_image": per_image, "total_per_image": sum(per_image.values()),
        "measured_total_s": total, "peak_gib": peak, "threads": torch.get_num_threads(),
        "floor_per_image": floors, "warmup_s": warmup, "unit_s": unit,
        "passes": {stage: {f"{k} x{rows}": n for (k, rows), n in sorted(c.items())}
                   for stage, c in counts.items()},
        "pass_ms": {f"{k} x{rows}": 1000 * v for (k, rows), v in sorted(cost.items())},
    }


def reference_comparison(preset: str, auc_step: float, seeds: int = 1,
                         overrides: dict | None = None, figure: str | None = None) -> None:
    from inputiba import InputIBA
    from inputiba.data.assets import builtin_photos
    from inputiba.metrics.functional import deletion, insertion
    from inputiba.models.image import load_model

    model, prep = load_model("efficientnet-lite0")
    # the original's inputs: bilinear resize without antialiasing (cv2); with it, stage-1 maps
    # correlate less with the original's (coffee 0.977 instead of 0.990, chelsea 0.90 vs 0.95)
    prep = dataclasses.replace(prep, antialias=False)
    photos = builtin_photos()
    ex = InputIBA(model, "_blocks.5", preset=preset, **(overrides or {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex.estimate(_estimation_batches(prep), progress=False)
    names = list(TARGETS)
    x = prep.batch([photos[n] for n in names])
    t = torch.tensor([TARGETS[n] for n in names])

    def aucs(m: torch.Tensor, i: int) -> tuple[float, float]:
        d = deletion(model, x[i:i + 1], t[i:i + 1], m[None], step=auc_step).auc.item()
        ins = insertion(model, x[i:i + 1], t[i:i + 1], m[None], step=auc_step).auc.item()
        return d, ins

    ours: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    maps: dict[str, list[np.ndarray]] = {key: [] for _, key, _ in STAGES}
    for seed in range(seeds):
        t0 = time.perf_counter()
        res = ex.attribute(x, target=t, seed=seed * len(names), return_details=True)
        secs = time.perf_counter() - t0
        print(f"\nReference photos, preset {preset!r} {overrides or ''}, seed {seed * len(names)}: {secs:.1f} s for "
              f"{len(names)} images (stages: "
              f"{', '.join(f'{k} {v:.1f} s' for k, v in res.seconds.items())})")
        for i, n in enumerate(names):
            ours[n].append(aucs(res.attribution[i, 0], i))
        for _, key, _ in STAGES:
            maps[key].append(getattr(res, key)[:, 0].cpu().numpy())
        if figure and seed == 0:
            _reference_figure(res, names, figure)
    originals = {n: _original_maps(n) for n in names}
    theirs = {n: [aucs(torch.from_numpy(m).float(), i) for m in originals[n]["input_mask"]]
              for i, n in enumerate(names)}
    print(f"\nAUCs with {auc_step} of the pixels a step (deletion: zeros; insertion: blur sigma 15); "
          "mean +- sample std over seeds (inputiba) and runs (the original code)")
    print(f"{'image':10s} {'maps':22s} {'deletion (lower better)':>24s} {'insertion (higher better)':>26s}")

    def row(image: str, who: str, a: np.ndarray) -> None:
        cells = [f"{a[:, k].mean():.4f}" + (f" +- {a[:, k].std(ddof=1):.4f}" if len(a) > 1 else "")
                 for k in (0, 1)]
        print(f"{image:10s} {who:22s} {cells[0]:>24s} {cells[1]:>26s}")

    for n in names:
        row(n, f"inputiba ({seeds} seeds)", np.array(ours[n]))
        row(n, f"original ({len(theirs[n])} runs)", np.array(theirs[n]))
    if len(names) > 1:  # each photo weighs the same
        for who, per_photo in (("inputiba", ours), ("original", theirs)):
            means = np.array([np.mean(per_photo[n], axis=0) for n in names])
            print(f"{'mean':10s} {who:22s} {means[:, 0].mean():24.4f} {means[:, 1].mean():26.4f}")
    for n in names:
        print(f"original runs, {n}: " + ", ".join(f"{d:.4f} / {i:.4f}" for d, i in theirs[n])
              + " (deletion / insertion; the first is the run of seed -1)")
    _stage_correlations(maps, originals, names)


def settings_agreement(preset: str, overrides: dict) -> None:
    """The final maps of the two reference photos with ``overrides`` (seed 0) against float32
    eager maps at the preset's defaults (seed 0), next to the seed-to-seed spread of the
    defaults (seed 0 vs seed 2: each photo gets new seeds): mean absolute difference and mean
    Pearson correlation over the photos, and the seconds each run took."""
    from inputiba import InputIBA
    from inputiba.data.assets import builtin_photos
    from inputiba.models.image import load_model

    model, prep = load_model("efficientnet-lite0")
    photos = builtin_photos()
    names = list(TARGETS)
    x = prep.batch([photos[n] for n in names])
    t = torch.tensor([TARGETS[n] for n in names])
    stats = None
    maps, secs = {}, {}
    for key, opts, seed in (("defaults, seed 0", {}, 0), ("defaults, seed 2", {}, len(names)),
                            (f"{overrides}, seed 0", overrides, 0)):
        ex = InputIBA(model, "_blocks.5", preset=preset, **opts)
        if stats is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stats = ex.estimate(_estimation_batches(prep), progress=False)
        ex.statistics = stats
        t0 = time.perf_counter()
        maps[key] = ex.attribute(x, target=t, seed=seed)[:, 0]
        secs[key] = time.perf_counter() - t0

    def cmp(a: str, b: str) -> str:
        d = (maps[a] - maps[b]).abs().flatten(1).mean(1)
        c = [float(np.corrcoef(maps[a][i].ravel(), maps[b][i].ravel())[0, 1]) for i in range(len(names))]
        return f"mean abs difference {d.mean():.4f} (per photo {', '.join(f'{v:.4f}' for v in d)}), Pearson {np.mean(c):.3f}"

    keys = list(maps)
    print(f"\nMaps of {', '.join(names)}, preset {preset!r} (seconds per run: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in secs.items()) + ")")
    print(f"  {keys[2]} vs {keys[0]}: {cmp(keys[2], keys[0])}")
    print(f"  seed spread, {keys[1]} vs {keys[0]}: {cmp(keys[1], keys[0])}")


def _original_maps(name: str) -> dict[str, list[np.ndarray]]:
    """The original code's maps of photo ``name``, per stage (keys of STAGES), one per run
    stored in benchmarks/original_runs."""
    with np.load(ORIGINAL_RUNS / f"effnet_{name}.npz") as runs:
        return {k: list(runs[k].astype(np.float32)) for k, _, _ in STAGES}


def _stage_correlations(maps: dict[str, list[np.ndarray]],
                        originals: dict[str, dict[str, list[np.ndarray]]], names: list[str]) -> None:
    """Pearson correlation of each stage's maps: this project's with the original's, between
    two seeds of this project, and between two runs of the original. The method is
    stochastic; equal values mean the original's maps are like more seeds of this project's."""
    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    def pairs(ms: list[np.ndarray]) -> str:
        c = [corr(a, b) for j, a in enumerate(ms) for b in ms[j + 1:]]
        return f"{np.mean(c):.3f}" if c else "(1 map)"

    print("\nPearson correlation of the maps (mean over pairs)")
    print(f"{'image':10s} {'stage':22s} {'inputiba-original':>18s} {'inputiba seeds':>15s} "
          f"{'original runs':>14s}")
    for i, n in enumerate(names):
        for ref_key, key, title in STAGES:
            mine, theirs = [m[i] for m in maps[key]], originals[n][ref_key]
            across = np.mean([corr(a, b) for a in mine for b in theirs])
            print(f"{n:10s} {title:22s} {across:18.3f} {pairs(mine):>15s} {pairs(theirs):>14s}")


def _reference_figure(res, names: list[str], path: str) -> None:
    """Per photo, the original's three maps above this project's (first seed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3 * len(STAGES), 3 * 2 * len(names)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * len(names), len(STAGES))
    for i, n in enumerate(names):
        for j, (ref_key, ours_key, title) in enumerate(STAGES):
            ref = _original_maps(n)[ref_key][0]
            mine = getattr(res, ours_key)[i, 0].cpu().numpy()
            lo, hi = min(ref.min(), mine.min()), max(ref.max(), mine.max())
            for row, (who, m) in enumerate((("original", ref), ("inputiba", mine))):
                ax = axes[2 * i + row, j]
                ax.imshow(m, cmap="viridis", vmin=lo, vmax=hi)
                ax.set_title(f"{n}: {who} {title}", fontsize=8)
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"figure: {path}")


def print_floors(results: list[dict]) -> None:
    """The floor table: per stage, the seconds of its network passes alone (count x the
    measured median cost of one pass, in the same process after a warm-up) and the stage's
    time as a multiple of it."""
    print("\nFloor: seconds per image of each stage's network passes alone (passes x the median "
          "cost of one,\nmeasured in the same process after a warm-up); x floor = stage time / floor")
    print(f"{'model':7s} {'B':>3s} {'stage':8s} {'passes (kind x rows: count)':68s} {'floor s/img':>11s} "
          f"{'stage s/img':>11s} {'x floor':>8s}")
    for r in results:
        for stage in ("feature", "gan", "input"):
            passes = ", ".join(f"{k}: {n}" for k, n in r["passes"][stage].items())
            fl, st = r["floor_per_image"][stage], r["per_image"][stage]
            print(f"{r['model']:7s} {r['batch']:3d} {stage:8s} {passes:68s} {fl:11.2f} {st:11.2f} "
                  f"{st / fl:8.2f}")
        total_floor = sum(r["floor_per_image"].values())
        print(f"{r['model']:7s} {r['batch']:3d} {'all':8s} {'':68s} {total_floor:11.2f} "
              f"{r['total_per_image']:11.2f} {r['total_per_image'] / total_floor:8.2f}")
        print("  one pass (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in r["pass_ms"].items())
              + f"; warm-up {r['warmup_s']:.1f} s")
        units = r["total_per_image"] / r["unit_s"]
        theirs = [t / u for t, u in ORIGINAL_UNIT_RUNS]
        line = (f"  unit (forward+backward, 10 images at 224 px): {r['unit_s']:.3f} s; "
                f"{units:.0f} units per image")
        if r["model"] == "effnet":
            line += (f"; the original code: {', '.join(f'{u:.0f}' for u in theirs)} units "
                     f"(its two runs), {min(theirs) / units:.1f}-{max(theirs) / units:.1f}x as many")
        print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["effnet"], choices=sorted(MODELS))
    p.add_argument("--batch-sizes", nargs="*", type=int, default=[1, 4, 8],
                   help="batch sizes to time (none: only --reference)")
    p.add_argument("--preset", default="paper")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the preset, e.g. --set gan_real=lambda")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the steps to run (times are scaled back)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reference", action="store_true", help="compare AUCs with the original's maps")
    p.add_argument("--largest-batch", action="store_true",
                   help="after the listed sizes, keep doubling the batch until it no longer fits "
                        "(for CUDA: images per second at the largest batch that fits)")
    p.add_argument("--agreement", action="store_true",
                   help="compare the final maps of the reference photos with the --set settings "
                        "to the defaults' (float32 eager), next to the seed-to-seed spread")
    p.add_argument("--auc-step", type=float, default=0.01)
    p.add_argument("--figure", metavar="FILE",
                   help="--reference: save the original's maps above this project's (first seed; .png, .jpg)")
    p.add_argument("--seeds", type=int, default=1,
                   help="--reference: explain with this many seeds (the map is stochastic)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--cpu-time", action="store_true",
                   help="time in CPU seconds of the process instead of wall seconds (stages and "
                        "passes alike): on a machine shared with other processes this stays close "
                        "to the idle wall time, with --threads 1 (compiler subprocesses of "
                        "compile=True are not counted)")
    p.add_argument("--single", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from inputiba.cli.explain import parse_option

    overrides = dict(parse_option(o) for o in args.options)
    if args.single:
        if args.cpu_time:  # every timer of this process (the stages' included) counts CPU time
            time.perf_counter = time.process_time
        out = run_single(args.single[0], int(args.single[1]), args.preset, args.scale, args.device,
                         overrides)
        print("RESULT " + json.dumps(out))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"preset {args.preset!r}, scale {args.scale}, load average {os.getloadavg()[0]:.1f}"
          + (", CPU seconds" if args.cpu_time else ""))
    print(f"{'model':7s} {'B':>3s} {'setup s/img':>12s} {'stage1 s/img':>13s} {'stage2 s/img':>13s} {'stage3 s/img':>13s} "
          f"{'total s/img':>12s} {'img/s':>7s} {'peak GiB':>9s}")
    floor_rows = []
    for m in args.models:
        sizes = list(args.batch_sizes)
        while sizes:
            b = sizes.pop(0)
            cmd = [sys.executable, __file__, "--single", m, str(b), "--preset", args.preset,
                   *[a for o in args.options for a in ("--set", o)],
                   "--scale", str(args.scale), "--device", args.device,
                   *(["--threads", str(args.threads)] if args.threads else []),
                   *(["--cpu-time"] if args.cpu_time else [])]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                err = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{m:7s} {b:3d}  failed: {err}")
                break
            r = json.loads(line[7:])
            s = r["per_image"]
            tag = " (extrapolated)" if args.scale < 1 else ""
            print(f"{m:7s} {b:3d} {s.get('setup', 0.0):12.2f} {s['feature']:13.2f} {s['gan']:13.2f} {s['input']:13.2f} "
                  f"{r['total_per_image']:12.2f} {1 / r['total_per_image']:7.3f} {r['peak_gib']:9.2f}{tag}")
            floor_rows.append(r)
            if args.largest_batch and not sizes:
                sizes.append(b * 2)
    if floor_rows:
        print_floors(floor_rows)
    if args.agreement:
        settings_agreement(args.preset, overrides)
    if args.reference:
        reference_comparison(args.preset, args.auc_step, args.seeds, overrides, args.figure)


if __name__ == "__main__":
    main()
