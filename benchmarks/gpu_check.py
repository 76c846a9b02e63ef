"""The GPU check: one prepared run, within a time budget, for a session lent a CUDA machine.

Run it through ``benchmarks/gpu_check.sh`` (which bounds it to 8 minutes). It measures:

1. agreement: InputIBA maps of two built-in photos (``chelsea`` and ``coffee``, EfficientNet-Lite0
   ``_blocks.5``, the paper preset, the same statistics and seeds) on the CPU and on the device;
   the mean absolute difference of the final maps next to the seed-to-seed spread (the same
   photos, seed 0 vs seed 1 on the device) and next to bf16's difference from fp32;
2. throughput: images per second at batch 1 and at the largest batch that fits (doubling the
   batch until it runs out of memory or out of the time budget), EfficientNet-Lite0 ``_blocks.5``
   and torchvision's VGG16 ``features.17`` (random weights), the paper preset, fp32 and bf16,
   with the peak memory of each run (CUDA: peak allocated). The stages run a fraction of their
   steps (``--scale``) and the times are scaled back up, as ``bench_core.py --scale`` does.

It writes ``gpu_check.json`` and ``gpu_check.md`` (tables the README can quote) to ``--out``.
``--device cpu --dry-run`` runs the same code on tiny settings and 64x64 inputs on the CPU in
seconds (the test command runs it so that the script never rots).

Examples:
    bash benchmarks/gpu_check.sh                           # CUDA, writes to $OUT or ./gpu_check_out
    bash benchmarks/gpu_check.sh --device cpu --dry-run --out /tmp/check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import MODELS, TARGETS  # noqa: E402

#: Tiny settings of the dry run: every loop runs, each only once or twice.
DRY_SETTINGS = dict(feat_steps=2, feat_draws=2, gan_epochs=1, gan_dataset_size=16,
                    gan_subset_size=8, gan_batch_size=8, input_steps=2, input_draws=2)


class Budget:
    """A wall-clock budget in seconds from construction."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    # CPU: the process's peak RSS so far (not reset between runs)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _settings(args: argparse.Namespace, scale: float = 1.0, **extra: Any):
    """The paper preset (dry run: tiny), steps scaled by ``scale``; and the per-stage factors
    that scale measured times back up to the full settings."""
    from inputiba.core.config import resolve_config

    full = resolve_config("paper", **(DRY_SETTINGS if args.dry_run else {}), **extra)
    if scale >= 1:
        return full, {"setup": 1.0, "feature": 1.0, "gan": 1.0, "input": 1.0}
    cfg = full.replace(feat_steps=max(1, round(full.feat_steps * scale)),
                       gan_epochs=max(1, round(full.gan_epochs * scale)),
                       input_steps=max(1, round(full.input_steps * scale)))
    return cfg, {"setup": 1.0, "feature": full.feat_steps / cfg.feat_steps,
                 "gan": full.gan_epochs / cfg.gan_epochs,
                 "input": full.input_steps / cfg.input_steps}


def _photos(prep: Any, names: list[str], size: int | None) -> torch.Tensor:
    from inputiba.data.assets import builtin_photos

    photos = builtin_photos()
    x = prep.batch([photos[n] for n in names])
    if size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def _all_photos(prep: Any, size: int | None) -> torch.Tensor:
    from inputiba.data.assets import builtin_photos

    return _photos(prep, list(builtin_photos()), size)


def _estimate(ex: Any, x: torch.Tensor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex.estimate([x], progress=False)


def agreement(args: argparse.Namespace) -> dict[str, Any]:
    """CPU vs device maps of two photos, next to the seed spread and bf16's difference."""
    from inputiba import InputIBA
    from inputiba.models.image import load_model

    names = list(TARGETS)
    size = 64 if args.dry_run else None
    cfg, _ = _settings(args)
    maps: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    stats = None
    dev = args.device
    runs = [("cpu fp32 seed 0", "cpu", "fp32", 0), (f"{dev} fp32 seed 0", dev, "fp32", 0),
            (f"{dev} fp32 seed 1", dev, "fp32", 1), (f"{dev} bf16 seed 0", dev, "bf16", 0)]
    for key, device, precision, seed in runs:
        if key in maps:  # --device cpu: the device's fp32 run is the CPU's
            continue
        model, prep = load_model("efficientnet-lite0", device=device)
        x = _photos(prep, names, size)
        t = torch.tensor([TARGETS[n] for n in names])
        ex = InputIBA(model, "_blocks.5", preset=cfg, precision=precision,
                      max_batch=args.max_batch if device != "cpu" else cfg.max_batch)
        if stats is None:  # the same statistics everywhere (estimated on the CPU)
            _estimate(ex, _all_photos(prep, size))
            stats = ex.statistics
        else:
            ex.statistics = stats
        _sync(device)
        t0 = time.perf_counter()
        maps[key] = ex.attribute(x.to(device), target=t, seed=seed).float().cpu()
        _sync(device)
        seconds[key] = time.perf_counter() - t0
        print(f"agreement: {key}: {seconds[key]:.1f} s for {len(names)} photos", flush=True)

    def compare(a: str, b: str) -> dict[str, Any]:
        ma, mb = maps[a], maps[b]
        per_photo = (ma - mb).abs().flatten(1).mean(1)
        corr = [float(torch.corrcoef(torch.stack([ma[i].flatten(), mb[i].flatten()]))[0, 1])
                for i in range(len(names))]
        return {"a": a, "b": b, "mean_abs_diff": float(per_photo.mean()),
                "mean_abs_diff_per_photo": dict(zip(names, map(float, per_photo), strict=True)),
                "pearson_per_photo": dict(zip(names, corr, strict=True))}

    pairs = [compare("cpu fp32 seed 0", f"{dev} fp32 seed 0"),
             compare(f"{dev} fp32 seed 0", f"{dev} fp32 seed 1"),
             compare(f"{dev} fp32 seed 0", f"{dev} bf16 seed 0")]
    for p, what in zip(pairs, ("device vs CPU", "seed-to-seed spread", "bf16 vs fp32"), strict=True):
        p["what"] = what
    return {"photos": names, "seconds": seconds, "pairs": pairs,
            "map_means": {k: float(v.mean()) for k, v in maps.items()}}


def throughput(args: argparse.Namespace, budget: Budget, rows: list[dict[str, Any]],
               save: Any = None) -> list[dict[str, Any]]:
    """Images per second at batch 1 and doubling batches, per model and precision; appends a
    row per run to ``rows`` and calls ``save()`` after each (a stopped check keeps its rows)."""
    from inputiba import InputIBA
    from inputiba.models.image import load_model

    size = 64 if args.dry_run else None
    jobs = [(m, p) for m in args.models for p in args.precisions]
    if args.dry_run:  # fp32 only: bf16 is slow on CPUs, and the agreement already ran it
        jobs = [(m, p) for m, p in jobs if p == "fp32"]
    for j, (model_key, precision) in enumerate(jobs):
        share_end = time.perf_counter() + budget.left() / (len(jobs) - j)
        name, layer = MODELS[model_key]
        model, prep = load_model(name, device=args.device)  # VGG16: random weights
        photos = _all_photos(prep, size)
        scale = 1.0 if args.dry_run else args.scale[model_key]
        cfg, factors = _settings(args, scale)
        ex = InputIBA(model, layer, preset=cfg, precision=precision, compile=args.compile,
                      max_batch=args.max_batch)
        _estimate(ex, photos.to(args.device))
        batch, last = 1, None
        while True:
            x = photos[torch.arange(batch) % len(photos)].to(args.device)
            _reset_peak(args.device)
            row: dict[str, Any] = {"model": model_key, "layer": layer, "precision": precision,
                                   "batch": batch, "scale": scale}
            try:
                _sync(args.device)
                t0 = time.perf_counter()
                res = ex.attribute(x, target=0 if model_key == "vgg16" else None,
                                   return_details=True)
                _sync(args.device)
                wall = time.perf_counter() - t0
            except torch.cuda.OutOfMemoryError:
                row["result"] = "out of memory"
                rows.append(row)
                print(f"throughput: {model_key} {precision} B={batch}: out of memory", flush=True)
                if save:
                    save()
                break
            per_image = {k: v * factors[k] / batch for k, v in res.seconds.items()}
            total = sum(per_image.values())
            row.update(result="ok", wall_s=wall, per_image_s=per_image, total_per_image_s=total,
                       images_per_s=1 / total, peak_gib=_peak_gib(args.device))
            rows.append(row)
            if save:
                save()
            print(f"throughput: {model_key} {precision} B={batch}: {total:.3f} s/img, "
                  f"{1 / total:.2f} img/s, peak {row['peak_gib']:.2f} GiB (ran {wall:.1f} s)",
                  flush=True)
            del res
            # next: twice the batch, if it fits the cap and (about twice as long) the time share
            last = wall
            # the dry run: batch 2 only for EfficientNet-Lite0 (the doubling's code path)
            cap = (2 if model_key == "effnet" else 1) if args.dry_run else args.max_images
            if batch * 2 > cap or last * 2.3 > share_end - time.perf_counter():
                row["stopped"] = "batch cap" if batch * 2 > cap else "time budget"
                break
            batch *= 2
        del ex, model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [f"GPU check on {report['device_name']} (torch {report['torch']}, "
             f"{'dry run, ' if report['dry_run'] else ''}{report['seconds']:.0f} s; "
             f"max_batch {report['max_batch']}, command `{report['command']}`)"
             + (f"; stopped by the {report['stopped']}" if report.get("stopped") else ""), ""]
    ag = report.get("agreement")
    if ag:
        lines += ["| maps (chelsea, coffee; EfficientNet-Lite0 `_blocks.5`, paper preset) | "
                  "mean abs difference | Pearson per photo |", "| --- | --- | --- |"]
        for p in ag["pairs"]:
            corr = ", ".join(f"{v:.3f}" for v in p["pearson_per_photo"].values())
            lines.append(f"| {p['what']}: {p['a']} vs {p['b']} | {p['mean_abs_diff']:.4f} | {corr} |")
        lines += ["", "Seconds for the two photos: "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in ag["seconds"].items()), ""]
    lines += ["| model | precision | batch | s per image | images/s | peak GiB | note |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in report.get("throughput", []):
        if r["result"] != "ok":
            lines.append(f"| {r['model']} | {r['precision']} | {r['batch']} | | | | {r['result']} |")
            continue
        note = (f"steps x{r['scale']:g}, times scaled up" if r["scale"] < 1 else "")
        if r.get("stopped"):
            note += ("; " if note else "") + f"stopped: {r['stopped']}"
        lines.append(f"| {r['model']} | {r['precision']} | {r['batch']} | "
                     f"{r['total_per_image_s']:.3f} | {r['images_per_s']:.2f} | "
                     f"{r['peak_gib']:.2f} | {note} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dry-run", action="store_true", help="tiny settings and 64x64 inputs (CPU test)")
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out",
                   help="folder for gpu_check.json and gpu_check.md (default $OUT or ./gpu_check_out)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="seconds for the whole check (the throughput runs stop doubling in time)")
    p.add_argument("--models", nargs="+", default=["effnet", "vgg16"], choices=sorted(MODELS))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                   choices=["fp32", "bf16", "fp16"])
    p.add_argument("--max-batch", type=int, default=None,
                   help="rows per network pass on the device (default: 256 on CUDA, 8 on a CPU)")
    p.add_argument("--max-images", type=int, default=256, help="largest batch to try")
    p.add_argument("--compile", action="store_true", help="throughput runs with compile=True")
    p.add_argument("--skip-agreement", action="store_true")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("CUDA is not available here (use --device cpu --dry-run to test the script)")
    if args.max_batch is None:
        args.max_batch = 256 if args.device.startswith("cuda") else 8
    args.scale = {"effnet": 0.1, "vgg16": 0.05}
    budget = Budget(args.budget_s)
    t0 = time.perf_counter()
    name = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
            else platform.processor() or platform.machine())
    report: dict[str, Any] = {
        "device": args.device, "device_name": name, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "dry_run": args.dry_run, "max_batch": args.max_batch,
        "command": " ".join(["benchmarks/gpu_check.sh", *sys.argv[1:]]),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save() -> str:
        """Write what is measured so far (also when the time limit stops the check)."""
        report["seconds"] = time.perf_counter() - t0
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
        md = markdown(report)
        (out / "gpu_check.md").write_text(md)
        return md

    report["throughput"] = []
    if not args.skip_agreement:
        report["agreement"] = agreement(args)
        save()
    try:
        throughput(args, budget, report["throughput"], save)
    except KeyboardInterrupt:  # gpu_check.sh's time limit: keep what was measured
        report["stopped"] = "time limit"
    print(save())
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")


if __name__ == "__main__":
    main()
