"""``inputiba evaluate``: score saved attribution maps with the evaluation suite.

A thin command over :func:`inputiba.metrics.evaluate.evaluate_maps` (see there for what is
read and written).
"""

from __future__ import annotations

import argparse

from inputiba.metrics.evaluate import (
    ALL_METRICS,
    DEFAULT_METRICS,
    EvaluationSettings,
    evaluate_maps,
)

__all__ = ["register", "run", "evaluate_maps"]


# ----------------------------------------------------------------------------- parser


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score saved attribution maps (deletion/insertion, EHR, pointing game, ...)",
        description=(
            "Score attribution maps saved as <stem>.npy (float H x W at the image's original size, "
            "as `inputiba explain` writes them) against their images, a model and boxes."
        ),
        epilog=(
            "examples:\n"
            "  inputiba evaluate out/ --builtin --out eval/\n"
            "  inputiba evaluate maps/ --images photos/ --boxes labels/ --model efficientnet-lite0\n"
            "  inputiba evaluate maps/ --imagenet /data/imagenet_boxes --split val --paper\n"
            "\nboxes: labelme <stem>.json or PASCAL VOC <stem>.xml beside the images or in --boxes;\n"
            "targets: --target, --targets FILE.json {stem: class}, results.json of `inputiba explain`,\n"
            "the classes of the boxes (the one the model rates highest), else the prediction."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("maps", help="folder of <stem>.npy maps")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", help="folder of the images (<stem>.jpg/.png/...)")
    src.add_argument(
        "--imagenet",
        help="ImageNet-style root: images/<split>/<wnid>/, annotations/<split>/<wnid>/*.xml",
    )
    src.add_argument(
        "--builtin",
        action="store_true",
        help="the built-in localisation set (labelme VOC photos + quokka)",
    )
    p.add_argument("--split", default="val", help="split folder of --imagenet (default val)")
    p.add_argument(
        "--boxes", help="folder of labelme .json / VOC .xml box files (default: beside the images)"
    )
    p.add_argument(
        "--class-index", help="imagenet_class_index.json to map VOC <name> WordNet ids to classes"
    )
    p.add_argument(
        "--model", default="efficientnet-lite0", help="model name or package.module:factory"
    )
    p.add_argument("--weights", help="weights file for the model")
    p.add_argument("--target", type=int, help="one class index for every image")
    p.add_argument("--targets", help="JSON file {stem: class index}")
    p.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        metavar="METRIC",
        help=f"any of {', '.join(ALL_METRICS)} "
             "(default: all but sensitivity, which takes ~4,200 forward passes per image)",
    )
    p.add_argument(
        "--step",
        type=float,
        default=0.01,
        help="deletion/insertion step: a fraction of the pixels (<1) or pixels (>=1); default 0.01",
    )
    p.add_argument(
        "--paper", action="store_true", help="the paper's protocol: 10 pixels a step (50x slower)"
    )
    p.add_argument(
        "--blur-sigma", type=float, default=15.0, help="blur of the insertion start image"
    )
    p.add_argument(
        "--min-probability",
        type=float,
        default=0.6,
        help="skip images whose target probability is lower (the paper: 0.6; 0 keeps all)",
    )
    p.add_argument(
        "--ehr-max-box-fraction",
        type=float,
        default=0.33,
        help="EHR skips images whose boxes cover more (the paper: 0.33; 0 keeps all)",
    )
    p.add_argument(
        "--pointing-tolerance", type=float, default=15.0, help="pointing game tolerance in pixels"
    )
    p.add_argument("--sensitivity-subsets", type=int, default=100, help="random subsets per N")
    p.add_argument("--batch-size", type=int, default=64, help="inputs per forward pass")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="evaluation", help="output folder (default ./evaluation)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG curve plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary print")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = EvaluationSettings(
        metrics=args.metrics,
        step=10 if args.paper else args.step,
        blur_sigma=args.blur_sigma,
        min_probability=args.min_probability,
        ehr_max_box_fraction=args.ehr_max_box_fraction,
        pointing_tolerance=args.pointing_tolerance,
        sensitivity_subsets=args.sensitivity_subsets,
        batch_size=args.batch_size,
        device=args.device,
        plots=not args.no_plots,
        progress=not args.quiet,
    )
    res = evaluate_maps(
        args.maps, args.out, images=args.images, boxes=args.boxes, class_index=args.class_index,
        imagenet=args.imagenet, split=args.split, builtin=args.builtin, model=args.model,
        weights=args.weights, target=args.target, targets=args.targets, settings=settings,
    )
    if not args.quiet:
        for k, v in res.summary["metrics"].items():
            if isinstance(v, dict) and "mean" in v:
                mean = "nan" if v["mean"] is None else f"{v['mean']:.4f}"
                std = "nan" if v["std"] is None else f"{v['std']:.4f}"
                print(f"{k:20s} {mean} +- {std} (n={v['n']})")
        print(f"wrote {res.out / 'summary.json'}")
    return 0 if res.ok else 1
