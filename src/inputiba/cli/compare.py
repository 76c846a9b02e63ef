"""``inputiba compare``: several attribution methods through the evaluation suite, one table.

A thin layer over :mod:`inputiba.workflows.compare`; see there for the output folder's layout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from inputiba.methods.image import available_explainers

__all__ = ["register", "run"]

#: Every registered method, in the registry's (the paper's) order.
DEFAULT_METHODS = tuple(available_explainers())


def _items(args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    from inputiba.data.datasets import ImageNetBoxFolder, load_localization_set
    from inputiba.workflows.compare import CompareItem

    if args.imagenet:
        ds = ImageNetBoxFolder(args.imagenet, args.split)
        items = []
        for i, (path, _wnid) in enumerate(ds.items[: args.limit or None]):
            s = ds[i]
            items.append(CompareItem(Path(path).stem, s.image, s.class_ids, ds.target(i)))
        return items, ["--imagenet", str(args.imagenet), "--split", args.split]
    samples = load_localization_set()[: args.limit or None]
    return [CompareItem(s.name, s.image, s.class_ids) for s in samples], ["--builtin"]


def _statistics_loader(args: argparse.Namespace, model: Any, preprocess: Any, layer: str):
    """``() -> LayerStatistics``: the given file, else estimated once and cached in OUT."""
    cache: dict[str, Any] = {}

    def load() -> Any:
        from inputiba.core.statistics import LayerStatistics, estimate_layer_statistics

        if "stats" in cache:
            return cache["stats"]
        if args.statistics:
            stats = LayerStatistics.load(args.statistics)
        else:
            path = Path(args.out) / f"statistics_{layer}.pt"
            if path.exists():
                stats = LayerStatistics.load(path)
            else:
                import torch

                from inputiba.data.assets import standin_estimation_images

                images = standin_estimation_images(n=args.estimation_samples, seed=0)
                batches = [
                    torch.stack([preprocess(im) for im in images[i : i + 16]]).to(args.device)
                    for i in range(0, len(images), 16)
                ]
                print(
                    f"inputiba compare: estimating {layer} statistics from {len(images)} built-in "
                    "stand-in crops (pass --statistics for a real estimation set)",
                    file=sys.stderr,
                )
                stats = estimate_layer_statistics(
                    model, layer, batches, n_samples=None, progress=not args.quiet
                )
                stats.save(path, model=args.model, layer=layer, source="standin")
        cache["stats"] = stats
        return stats

    return load


#: Run-configuration key -> argument name; ``estimation.source`` must be a statistics file
#: here (compare estimates from stand-in crops otherwise).
CONFIG_KEYS = {
    "model.name": "model", "model.weights": "weights", "model.layer": "layer",
    "estimation.source": "statistics", "estimation.n_samples": "estimation_samples",
    "preset": "preset", "seed": "seed", "output.dir": "out",
}


def run(args: argparse.Namespace) -> int:
    from inputiba.cli._runconfig import apply_config
    from inputiba.workflows.runconfig import RunConfigError, write_run_config

    cfg = apply_config(args, CONFIG_KEYS)
    if args.statistics and not Path(args.statistics).is_file():
        raise RunConfigError(f"compare needs a statistics file as estimation.source / "
                             f"--statistics, not {args.statistics!r}")
    from inputiba.cli.evaluate import resolve_model
    from inputiba.methods.image import available_explainers
    from inputiba.models.image import default_layer
    from inputiba.workflows.compare import (
        build_explainer_factory,
        choose_targets,
        comparison_table,
        compute_maps,
        evaluate_method,
        figure_grid,
        write_report,
    )

    methods = list(dict.fromkeys(m.replace("-", "_").lower() for m in args.methods))
    unknown = [m for m in methods if m not in available_explainers()]
    if unknown:
        raise ValueError(
            f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(available_explainers())}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, preprocess = resolve_model(args.model, args.weights)
    pre = cfg.model.preprocessing
    if pre is not None and (tuple(pre.build().hw), tuple(pre.mean), tuple(pre.std)) != (
        tuple(getattr(preprocess, "hw", ())), tuple(getattr(preprocess, "mean", ())),
        tuple(getattr(preprocess, "std", ())),
    ):
        raise RunConfigError(
            f"compare uses {args.model}'s own preprocessing (the evaluation reloads the model); "
            "the configuration's model.preprocessing differs: remove it or use 'inputiba explain'"
        )
    model = model.to(args.device)
    layer = args.layer or default_layer(args.model)
    if layer is None and any(m in ("inputiba", "iba") for m in methods):
        raise ValueError(f"no default bottleneck layer for {args.model!r}: pass --layer")
    items, dataset_args = _items(args)
    if not items:
        raise ValueError("no images to compare on")
    chosen = choose_targets(model, preprocess, items, out / "targets.json", args.device)
    targets = {
        k: v["target"] for k, v in chosen.items()
        if v["probability"] >= args.min_probability and k in {it.name for it in items}
    }
    skipped = sorted({it.name for it in items} - set(targets))
    if skipped and not args.quiet:
        print(
            f"inputiba compare: skipping {', '.join(skipped)} (target probability below "
            f"{args.min_probability})",
            file=sys.stderr,
        )
    if not targets:
        raise ValueError(
            f"no image reaches --min-probability {args.min_probability}; lower it to compare"
        )
    targets_file = out / "targets_used.json"
    targets_file.write_text(json.dumps(targets, indent=2))

    options: dict[str, dict[str, Any]] = {
        "inputiba": {**cfg.inputiba, "preset": args.preset, "seed": args.seed},
        "iba": {"seed": args.seed},
        "extremal_perturbation": {"steps": args.ep_steps},
        "integrated_gradients": {"n_steps": args.ig_steps},
        "deepshap": {"seed": args.seed},
        "random": {"seed": args.seed},
    }
    stats = _statistics_loader(args, model, preprocess, layer) if layer else None
    seconds: dict[str, float] = {}
    for method in methods:
        factory = build_explainer_factory(
            method, model, layer=layer, gradcam_layer=args.gradcam_layer,
            statistics=stats, options=options,
        )
        timing = compute_maps(
            factory, method, model, preprocess, items, targets, out / "maps" / method,
            batch_size=args.batch_size, device=args.device, progress=not args.quiet,
        )
        used = [timing[k] for k in targets if k in timing]
        if used:
            seconds[method] = float(np.mean(used))

    eval_args = [
        "--model", args.model, "--targets", str(targets_file),
        "--min-probability", str(args.min_probability), "--step", str(args.step),
        "--metrics", *args.metrics, "--device", args.device, "--quiet",
        "--sensitivity-subsets", str(args.sensitivity_subsets),
    ]
    if args.weights:
        eval_args += ["--weights", args.weights]
    if args.paper:
        eval_args.append("--paper")
    summaries = {}
    for method in methods:
        def announce(method: str = method) -> None:
            if not args.quiet:
                print(f"inputiba compare: evaluating {method}", file=sys.stderr)

        summaries[method] = evaluate_method(
            out / "maps" / method, out / "eval" / method, dataset_args, eval_args,
            force=args.re_evaluate, announce=announce,
        )
    table = comparison_table(summaries, seconds)
    settings = {
        "model": args.model, "layer": layer, "preset": args.preset, "methods": methods,
        "images": sorted(targets), "skipped_low_probability": skipped,
        "step": 10 if args.paper else args.step, "min_probability": args.min_probability,
        "extremal_perturbation_steps": args.ep_steps, "ig_steps": args.ig_steps,
        "seed": args.seed, "dataset": dataset_args,
    }
    header = (
        f"Model {args.model}, {len(targets)} images, bottleneck layer {layer}, InputIBA preset "
        f"{args.preset}. Mean ± std over images; best in bold.\n\n"
    )
    (out / "comparison.md").write_text(header + table)
    figure_grid(items, methods, out / "maps", out / "grid.png")
    write_report(out, table, methods, settings)
    write_run_config(cfg, out)
    if not args.quiet:
        print(header + table)
        print(f"wrote {out / 'comparison.md'} and {out / 'report.html'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from inputiba.cli._runconfig import Default, add_config_argument

    p = subparsers.add_parser(
        "compare",
        help="compare attribution methods with the evaluation suite (table + HTML report)",
        description=(
            "Explain every image with each method (maps saved as float .npy, resumable), score "
            "the maps with `inputiba evaluate`, and write comparison.md and report.html."
        ),
        epilog=(
            "examples:\n"
            "  inputiba compare --out compare/\n"
            "  inputiba compare --methods gradcam integrated_gradients random --out cmp/\n"
            "  inputiba compare --imagenet /data/imagenet_boxes --model vgg16 "
            "--weights vgg16.pth --limit 100\n"
            "\nmethods: " + ", ".join(DEFAULT_METHODS)
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--builtin", action="store_true",
                     help="the built-in localisation set (the default)")
    src.add_argument("--imagenet", help="ImageNet-style root: images/<split>/<wnid>/, "
                                        "annotations/<split>/<wnid>/*.xml")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=0, help="use the first N images (0: all)")
    add_config_argument(p)
    p.add_argument("--model", default=Default("efficientnet-lite0"))
    p.add_argument("--weights", help="weights file (or torchvision weights name)")
    p.add_argument("--layer", help="InputIBA/IBA bottleneck layer (default: the model's)")
    p.add_argument("--gradcam-layer", help="Grad-CAM layer (default: the last spatial one)")
    p.add_argument("--preset", default=Default("fast"), choices=("fast", "paper"))
    p.add_argument("--statistics", help="LayerStatistics file for --layer")
    p.add_argument("--estimation-samples", type=int, default=Default(200),
                   help="stand-in crops to estimate the statistics when none are given")
    p.add_argument("--ep-steps", type=int, default=150, help="extremal perturbation steps")
    p.add_argument("--ig-steps", type=int, default=50, help="integrated gradients steps")
    p.add_argument("--seed", type=int, default=Default(0))
    p.add_argument("--metrics", nargs="+",
                   default=["deletion", "insertion", "sensitivity", "ehr", "pointing", "mass"])
    p.add_argument("--sensitivity-subsets", type=int, default=100,
                   help="random pixel subsets per N for sensitivity-N")
    p.add_argument("--step", type=float, default=0.01,
                   help="deletion/insertion step (fraction of pixels, or pixels if >= 1)")
    p.add_argument("--paper", action="store_true", help="10 pixels a step (50x slower)")
    p.add_argument("--min-probability", type=float, default=0.6)
    p.add_argument("--batch-size", type=int, default=4, help="images per attribution batch")
    p.add_argument("--re-evaluate", action="store_true",
                   help="rerun the evaluation even when no map changed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=Default("compare"), help="output folder (default ./compare)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
