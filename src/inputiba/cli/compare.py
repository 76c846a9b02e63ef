"""``inputiba compare``: several attribution methods through the evaluation suite, one table.

A thin layer over :func:`inputiba.workflows.compare.compare_methods`; see there for the output
folder's layout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inputiba.core.config import DEFAULT_PRESET
from inputiba.methods import available_explainers
from inputiba.metrics.evaluate import ALL_METRICS, DEFAULT_METRICS

__all__ = ["register", "run"]

#: Every registered method, in the registry's (the paper's) order.
DEFAULT_METHODS = tuple(available_explainers())

#: Run-configuration key -> argument name; ``estimation.source`` must be a statistics file
#: here (compare estimates from stand-in crops otherwise).
CONFIG_KEYS = {
    "model.name": "model", "model.weights": "weights", "model.layer": "layer",
    "estimation.source": "statistics", "estimation.n_samples": "estimation_samples",
    "preset": "preset", "seed": "seed", "output.dir": "out",
}


def run(args: argparse.Namespace) -> int:
    from inputiba.cli._runconfig import apply_config
    from inputiba.metrics.evaluate import EvaluationSettings
    from inputiba.models.image import load_model
    from inputiba.workflows.compare import CompareSettings, compare_methods
    from inputiba.workflows.runconfig import RunConfigError, write_run_config

    cfg = apply_config(args, CONFIG_KEYS)
    if args.statistics and not Path(args.statistics).is_file():
        raise RunConfigError(f"compare needs a statistics file as estimation.source / "
                             f"--statistics, not {args.statistics!r}")
    pre = cfg.model.preprocessing
    preprocess = load_model(args.model, args.weights)[1] if pre is not None else None
    if pre is not None and (tuple(pre.build().hw), tuple(pre.mean), tuple(pre.std)) != (
        tuple(getattr(preprocess, "hw", ())), tuple(getattr(preprocess, "mean", ())),
        tuple(getattr(preprocess, "std", ())),
    ):
        raise RunConfigError(
            f"compare uses {args.model}'s own preprocessing (the evaluation reloads the model); "
            "the configuration's model.preprocessing differs: remove it or use 'inputiba explain'"
        )
    evaluation = EvaluationSettings(
        metrics=args.metrics, step=10 if args.paper else args.step,
        min_probability=args.min_probability, sensitivity_subsets=args.sensitivity_subsets,
        device=args.device, progress=False,
    )
    settings = CompareSettings(
        methods=args.methods, layer=args.layer,
        gradcam_layer=args.gradcam_layer, preset=args.preset, inputiba_options=cfg.inputiba,
        statistics=args.statistics, estimation_samples=args.estimation_samples, seed=args.seed,
        ep_steps=args.ep_steps, ig_steps=args.ig_steps, batch_size=args.batch_size,
        evaluation=evaluation, device=args.device, progress=not args.quiet,
        re_evaluate=args.re_evaluate,
    )
    res = compare_methods(
        args.out, imagenet=args.imagenet, split=args.split, limit=args.limit,
        model=args.model, weights=args.weights, settings=settings,
    )
    write_run_config(cfg, res.out)
    if not args.quiet:
        print(res.table)
        print(f"wrote {res.out / 'comparison.md'} and {res.out / 'report.html'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from inputiba.cli._runconfig import Default, add_config_argument, add_ensemble_argument
    from inputiba.cli.explain import parse_option
    from inputiba.core.config import PRESETS

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
                     help="every built-in photo (the default): 14, five with boxes")
    src.add_argument("--imagenet", help="ImageNet-style root: images/<split>/<wnid>/, "
                                        "annotations/<split>/<wnid>/*.xml")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=0, help="use the first N images (0: all)")
    add_config_argument(p)
    p.add_argument("--model", default=Default("efficientnet-lite0"))
    p.add_argument("--weights", help="weights file (or torchvision weights name)")
    p.add_argument("--layer", help="InputIBA/IBA bottleneck layer (default: the model's)")
    p.add_argument("--gradcam-layer", help="Grad-CAM layer (default: the last spatial one)")
    p.add_argument("--preset", default=Default(DEFAULT_PRESET), choices=tuple(PRESETS))
    p.add_argument("--set", dest="options", action="append", type=parse_option, default=[],
                   metavar="KEY=VALUE",
                   help="override one InputIBA hyper-parameter (repeatable; InputIBA only)")
    add_ensemble_argument(p)
    p.add_argument("--statistics", help="LayerStatistics file for --layer")
    p.add_argument("--estimation-samples", type=int, default=Default(200),
                   help="stand-in crops to estimate the statistics when none are given")
    p.add_argument("--ep-steps", type=int, default=150, help="extremal perturbation steps")
    p.add_argument("--ig-steps", type=int, default=50, help="integrated gradients steps")
    p.add_argument("--seed", type=int, default=Default(0))
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), metavar="METRIC",
                   help=f"any of {', '.join(ALL_METRICS)} (default: all but sensitivity, which "
                        "takes ~4,200 forward passes per image and method)")
    p.add_argument("--sensitivity-subsets", type=int, default=100,
                   help="random pixel subsets per N for sensitivity-N")
    p.add_argument("--step", type=float, default=0.02,
                   help="deletion/insertion step (fraction of pixels, or pixels if >= 1; "
                        "default 0.02: AUCs within 0.005 of step 0.01's, in half the time)")
    p.add_argument("--paper", action="store_true", help="10 pixels a step (50x slower)")
    p.add_argument("--min-probability", type=float, default=0.0,
                   help="leave out images whose target probability is lower (default 0: every "
                        "image with the model's class; the paper's filter is 0.6)")
    p.add_argument("--batch-size", type=int, default=4, help="images per attribution batch")
    p.add_argument("--re-evaluate", action="store_true",
                   help="rerun the evaluation even when no map changed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=Default("compare"), help="output folder (default ./compare)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
