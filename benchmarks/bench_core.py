"""Speed, memory and map quality of InputIBA (the core library), printed, never asserted.

For each model and batch size, one subprocess runs the three stages at the chosen settings and
reports seconds per image by stage and the peak memory of that process (CPU: peak RSS; CUDA:
peak allocated). ``--scale`` runs that fraction of every stage's steps/epochs and scales the
times back up (the cost per step is constant), for slow configurations such as VGG16 on a CPU;
the table says when it did.

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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
import warnings
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
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = ex.attribute(x, target=0 if model_key == "vgg16" else None, return_details=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    full = _scaled_config(preset, 1.0, overrides)
    factors = {
        "setup": 1.0,
        "feature": full.feat_steps / cfg.feat_steps,
        "gan": full.gan_epochs / cfg.gan_epochs,
        "input": full.input_steps / cfg.input_steps,
    }
    per_image = {k: v * factors[k] / batch for k, v in res.seconds.items()}
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {
        "model": model_key, "batch": batch, "device": device, "scale": scale,
        "per_image": per_image, "total_per_image": sum(per_image.values()),
        "measured_total_s": total, "peak_gib": peak, "threads": torch.get_num_threads(),
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
    p.add_argument("--auc-step", type=float, default=0.01)
    p.add_argument("--figure", metavar="FILE",
                   help="--reference: save the original's maps above this project's (first seed; .png, .jpg)")
    p.add_argument("--seeds", type=int, default=1,
                   help="--reference: explain with this many seeds (the map is stochastic)")
    p.add_argument("--single", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    from inputiba.cli.explain import parse_option

    overrides = dict(parse_option(o) for o in args.options)
    if args.single:
        out = run_single(args.single[0], int(args.single[1]), args.preset, args.scale, args.device,
                         overrides)
        print("RESULT " + json.dumps(out))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"preset {args.preset!r}, scale {args.scale}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':7s} {'B':>3s} {'setup s/img':>12s} {'stage1 s/img':>13s} {'stage2 s/img':>13s} {'stage3 s/img':>13s} "
          f"{'total s/img':>12s} {'img/s':>7s} {'peak GiB':>9s}")
    for m in args.models:
        sizes = list(args.batch_sizes)
        while sizes:
            b = sizes.pop(0)
            cmd = [sys.executable, __file__, "--single", m, str(b), "--preset", args.preset,
                   *[a for o in args.options for a in ("--set", o)],
                   "--scale", str(args.scale), "--device", args.device]
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
            if args.largest_batch and not sizes:
                sizes.append(b * 2)
    if args.reference:
        reference_comparison(args.preset, args.auc_step, args.seeds, overrides, args.figure)


if __name__ == "__main__":
    main()
