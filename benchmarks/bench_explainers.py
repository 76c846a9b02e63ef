"""Seconds per image of each attribution method on EfficientNet-Lite0 (224 x 224), and a
quick check of the map convention. Prints a Markdown table.

    PYTHONPATH=src python benchmarks/bench_explainers.py --images 2 --threads 2
    PYTHONPATH=src python benchmarks/bench_explainers.py --methods extremal_perturbation \
        --ep-steps 300

InputIBA and IBA need layer statistics: pass ``--statistics PATH`` (a ``LayerStatistics``
file for ``_blocks.5``) to include them. Timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import time

import torch

from inputiba.data.assets import builtin_photos
from inputiba.methods.image import available_explainers, get_explainer
from inputiba.models.image import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2, help="built-in photos to explain")
    ap.add_argument("--methods", nargs="*", default=None, help="default: all available")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--statistics", default=None, help="LayerStatistics for _blocks.5")
    ap.add_argument("--ep-steps", type=int, default=None, help="extremal perturbation steps")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, prep = load_model("efficientnet-lite0", device=args.device)
    photos = builtin_photos()
    names = list(photos)[: args.images]
    x = prep.batch([photos[n] for n in names]).to(args.device)
    methods = args.methods or available_explainers()
    print(f"EfficientNet-Lite0, {len(names)} images ({', '.join(names)}), "
          f"{args.threads} thread(s), device {args.device}\n")
    print("| method | s / image | raw shape | map mean | map max |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name in methods:
        kw: dict = {}
        if name in ("inputiba", "iba"):
            if args.statistics is None:
                print(f"| {name} | (skipped: no --statistics) | | | |")
                continue
            kw = {"layer": "_blocks.5", "statistics": args.statistics}
        if name == "extremal_perturbation" and args.ep_steps:
            kw["steps"] = args.ep_steps
        explainer = get_explainer(name, model, **kw)
        t0 = time.perf_counter()
        res = explainer.attribute(x, return_raw=True)
        dt = (time.perf_counter() - t0) / len(names)
        m = res.map
        print(f"| {name} | {dt:.2f} | {tuple(res.raw.shape)} | {m.mean():.3f} | "
              f"{m.amax(dim=(1, 2, 3)).min():.3f} |")


if __name__ == "__main__":
    main()
