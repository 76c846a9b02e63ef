"""Time the README's main job: ``inputiba explain`` on the built-in photos (EfficientNet-Lite0).

Prints the wall time of the whole run (cold: statistics estimated; warm: cached) and the
seconds per stage and image from ``results.json``.

    python benchmarks/bench_explain.py                     # all built-in photos, preset fast
    python benchmarks/bench_explain.py --photos chelsea coffee --preset paper --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from inputiba.data.assets import BUILTIN_PHOTO_NAMES, builtin_photos
from inputiba.workflows.explain import explain_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", nargs="*", default=list(BUILTIN_PHOTO_NAMES))
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--runs", type=int, default=1, help="repeat (later runs use cached stats)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = builtin_photos(tuple(args.photos))
    print(f"{len(photos)} photos, preset {args.preset}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads")
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            records = explain_images(list(photos.items()), preset=args.preset,
                                     batch_size=args.batch_size, out_dir=out, progress=False)
            wall = time.perf_counter() - t0
            data = json.loads((Path(out) / "results.json").read_text())
        info = records[0]["settings"]["statistics"]
        how = "cached" if info.get("cached") else f"estimated in {info.get('seconds')} s"
        print(f"run {run + 1}: {wall:.1f} s wall for {len(records)} images (statistics {how})")
        for stage in ("feature", "gan", "input", "write"):
            values = [r["seconds"][stage] for r in data if r["status"] == "ok"]
            if values:
                print(f"  {stage:8s} {statistics.mean(values):7.2f} s per image")


if __name__ == "__main__":
    main()
