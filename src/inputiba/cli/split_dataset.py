"""``inputiba split-dataset``: split a folder into an estimation set and an attribution set,
N images per class, seeded (a thin layer over :func:`inputiba.data.folders.split_dataset`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  inputiba split-dataset imagenet/ small_imagenet/ --estimation 2 --attribution 1
      ImageNet layout in, ImageNet layout out: small_imagenet/estimation and
      small_imagenet/attribution, each with images/val/<wnid>/, annotations and the class index
  inputiba split-dataset photos/ split/ --estimation 50 --attribution 10 --layout flat
      per sub-folder (class) of a plain folder; each set in one flat folder
"""


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {value}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``split-dataset`` parser."""
    p = subparsers.add_parser(
        "split-dataset",
        help="split a folder into estimation and attribution sets, N images per class",
        description="Per class, shuffle the images with the seed; the first N go to "
                    "OUT/estimation, the next M to OUT/attribution (never the same image). "
                    "OUT/split.json lists both.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", metavar="FOLDER", help="ImageNet-style or plain folder")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--estimation", type=_count, required=True, metavar="N",
                   help="images per class in the estimation set")
    p.add_argument("--attribution", type=_count, required=True, metavar="M",
                   help="images per class in the attribution set")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default: %(default)s)")
    p.add_argument("--split", default="val", help="split sub-folder (default: %(default)s)")
    p.add_argument("--class-index", metavar="FILE", help="imagenet_class_index.json")
    p.add_argument("--layout", default="class", choices=("class", "flat"),
                   help="one folder per class, or flat (default: %(default)s)")
    p.add_argument("--mode", default="copy", choices=("copy", "symlink", "hardlink", "list"),
                   help="how images get there; 'list' writes only split.json (default: "
                        "%(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inputiba.data.folders import split_dataset

    result = split_dataset(args.dataset, args.out, args.estimation, args.attribution,
                           seed=args.seed, split=args.split, layout=args.layout, mode=args.mode,
                           class_index=args.class_index)
    if not args.quiet:
        print(f"inputiba: {len(result['estimation'])} estimation and "
              f"{len(result['attribution'])} attribution images -> {args.out}", file=sys.stderr)
    return 0
