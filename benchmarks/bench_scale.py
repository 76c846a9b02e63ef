"""Throughput of dataset-scale runs (``inputiba explain-dataset``), printed, never asserted.

CPU: a folder of ``--images`` photos (default 16: crops and flips of the built-in photos) is
explained with EfficientNet-Lite0 at the ``fast`` preset twice, through the real CLI:

* one process with 2 threads (``OMP_NUM_THREADS=2``);
* two processes with 1 thread each (``torchrun --standalone --nproc_per_node=2``, gloo).

It prints images per second while explaining (images / the busiest rank's explaining time, from
``summary.json``) and end to end (including start-up, model loading and the final merge), the
2-process/1-process ratio (goal: >= 0.9), and checks that the merged outputs agree in count
(and prints the largest map difference). Statistics are estimated once beforehand (stand-in
set, ``--estimation-samples``) and passed to both runs.

CUDA (when present, or ``--gpu``): the same pipeline at the ``paper`` preset with
``max_batch=None`` (one forward pass per step), batch size 1 vs the largest batch that fits
(found by doubling a one-step probe until CUDA runs out of memory, or ``--gpu-batch``); goal:
the large batch >= 8x the images per second of batch 1.

Examples:
    python benchmarks/bench_scale.py                                 # CPU, 16 images, fast preset
    python benchmarks/bench_scale.py --images 4 --set input_steps=5  # reduced, on a busy machine
    python benchmarks/bench_scale.py --no-cpu --gpu                  # the CUDA part only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

SRC = Path(__file__).resolve().parents[1] / "src"


def make_folder(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` JPEGs: random crops (30-100% of the area) and flips of the built-in photos."""
    from PIL import Image

    from inputiba.data.assets import builtin_photos

    photos = list(builtin_photos().values())
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        ch, cw = int(h * rng.uniform(0.55, 1.0)), int(w * rng.uniform(0.55, 1.0))
        y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        crop = img[y:y + ch, x:x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"img{i:03d}.jpg", quality=92)


def make_statistics(path: Path, n: int, device: str = "cpu") -> None:
    from inputiba import estimate_layer_statistics
    from inputiba.models.image import load_model
    from inputiba.workflows.statistics import standin_batches

    model, prep = load_model("efficientnet-lite0", device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = estimate_layer_statistics(model, "_blocks.5",
                                          standin_batches(prep, (224, 224), n), n_samples=n,
                                          device=device, progress=False)
    stats.save(path, model="efficientnet-lite0", layer="_blocks.5", source="stand-in")


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def cli_run(folder: Path, out: Path, stats: Path, procs: int, threads: int, batch: int,
            sets: list[str], device: str = "cpu") -> dict:
    args = ["-m", "inputiba.cli", "explain-dataset", str(folder), "-o", str(out),
            "--statistics", str(stats), "-b", str(batch), "--targets", "predicted",
            "--no-gallery", "-q", "--device", device, "--preset", "fast"]
    for s in sets:
        args += ["--set", s]
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={procs}", *args]
    else:
        cmd = [sys.executable, *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    results = json.loads((out / "results.json").read_text())
    return {"summary": summary, "wall": wall, "results": results,
            "maps": sorted(p.name for p in out.glob("*.npy") if p.name.count(".") == 1)}


def cpu_part(args: argparse.Namespace, work: Path) -> None:
    folder, stats = work / "images", work / "statistics.pt"
    make_folder(folder, args.images)
    t0 = time.perf_counter()
    make_statistics(stats, args.estimation_samples)
    print(f"statistics: {args.estimation_samples} stand-in samples in "
          f"{time.perf_counter() - t0:.1f} s (not timed below)")
    rows = []
    for label, procs, threads in (("1 process x 2 threads", 1, 2),
                                  ("2 processes x 1 thread", 2, 1)):
        r = cli_run(folder, work / f"out{procs}", stats, procs, threads, args.batch_size,
                    args.set)
        rows.append((label, r))
        s = r["summary"]
        print(f"{label:24s} explaining {s['images_per_second']:.3f} img/s, end to end "
              f"{s['done'] / r['wall']:.3f} img/s ({s['done']} done, {s['failed']} failed, "
              f"wall {r['wall']:.1f} s)", flush=True)
    (_, one), (_, two) = rows
    ratio = two["summary"]["images_per_second"] / max(one["summary"]["images_per_second"], 1e-9)
    ratio_e2e = one["wall"] / two["wall"]
    print(f"2-process / 1-process throughput: {ratio:.2f}x explaining, {ratio_e2e:.2f}x end to "
          f"end (goal >= 0.9)")
    same = one["maps"] == two["maps"] and len(one["results"]) == len(two["results"])
    diff = max(float(np.abs(np.load(work / "out1" / m) - np.load(work / "out2" / m)).max())
               for m in one["maps"]) if same and one["maps"] else float("nan")
    print(f"merged outputs: {len(one['maps'])} vs {len(two['maps'])} maps, "
          f"{len(one['results'])} vs {len(two['results'])} records -> "
          f"{'identical in count' if same else 'DIFFERENT'}; largest map difference {diff:.2e}")


def largest_batch(model, layer: str, stats, prep, device: str, cap: int) -> int:
    """Double the batch until a one-step paper-preset run (max_batch=None) runs out of memory."""
    from inputiba import InputIBA
    from inputiba.data.assets import builtin_photos

    photos = list(builtin_photos().values())
    best, b = 0, 1
    while b <= cap:
        x = prep.batch([photos[i % len(photos)] for i in range(b)]).to(device)
        ex = InputIBA(model, layer, stats, preset="paper", max_batch=None, feat_steps=1,
                      gan_epochs=1, input_steps=1)
        try:
            ex.attribute(x)
            torch.cuda.synchronize()
            best = b
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            del x, ex
            torch.cuda.empty_cache()
        b *= 2
    return best


def gpu_part(args: argparse.Namespace, work: Path) -> None:
    from inputiba import LayerStatistics
    from inputiba.models.image import load_model
    from inputiba.workflows.dataset import explain_dataset

    device = "cuda"
    stats_path = work / "statistics-gpu.pt"
    make_statistics(stats_path, args.estimation_samples, device)
    model, prep = load_model("efficientnet-lite0", device=device)
    stats = LayerStatistics.load(stats_path)
    big = args.gpu_batch or largest_batch(model, "_blocks.5", stats, prep, device,
                                          args.gpu_cap)
    print(f"CUDA {torch.cuda.get_device_name()}: largest batch that fits (paper preset, "
          f"max_batch=None): {big}{' (given)' if args.gpu_batch else ''}", flush=True)
    results = {}
    for batch, n in ((1, args.gpu_batch1_images), (big, big)):
        folder = work / f"gpu-images-{n}"
        if not folder.exists():
            make_folder(folder, n)
        opts = {"max_batch": None}
        for s in args.set:
            k, _, v = s.partition("=")
            opts[k] = json.loads(v)
        torch.cuda.synchronize()
        summary = explain_dataset(folder, model="efficientnet-lite0", statistics=stats_path,
                                  preset="paper", options=opts, batch_size=batch,
                                  device=device, out_dir=work / f"gpu-out-{batch}",
                                  targets="predicted", gallery=False, progress=False,
                                  precision=args.precision, channels_last=args.channels_last)
        results[batch] = summary.images_per_second
        print(f"batch {batch:4d}: {summary.done} images, {summary.images_per_second:.3f} img/s "
              f"(precision {args.precision}, channels_last {args.channels_last})", flush=True)
    print(f"batch {big} / batch 1 throughput: {results[big] / max(results[1], 1e-9):.1f}x "
          f"(goal >= 8x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=16, help="images in the CPU folder")
    p.add_argument("--batch-size", type=int, default=4, help="images per batch (CPU runs)")
    p.add_argument("--estimation-samples", type=int, default=64)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="InputIBA overrides for every run (a reduced form: --set input_steps=5)")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU comparison")
    p.add_argument("--gpu", action="store_true", default=torch.cuda.is_available(),
                   help="run the CUDA part (default: when CUDA is available)")
    p.add_argument("--gpu-batch", type=int, help="the large batch (default: largest that fits)")
    p.add_argument("--gpu-cap", type=int, default=256, help="stop doubling at this batch")
    p.add_argument("--gpu-batch1-images", type=int, default=4,
                   help="images explained at batch size 1 on the GPU")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--work", help="keep the folders here (default: a temporary folder)")
    args = p.parse_args()
    sys.path.insert(0, str(SRC))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}, overrides {args.set or 'none'}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("INPUTIBA_CACHE", str(work / "cache"))
        if not args.no_cpu:
            cpu_part(args, work)
        if args.gpu:
            if not torch.cuda.is_available():
                print("CUDA part skipped: CUDA is not available")
            else:
                gpu_part(args, work)


if __name__ == "__main__":
    main()
