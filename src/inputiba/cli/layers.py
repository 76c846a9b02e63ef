"""``inputiba layers MODEL``: a model's layers and their output shapes, to choose the
bottleneck layer (``--layer`` / ``model.layer``)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  inputiba layers efficientnet-lite0
  inputiba layers resnet50 --depth 1          only the top-level blocks (layer1, layer2, ...)
  inputiba layers vgg16 --match features
  inputiba layers mypkg.models:build --weights net.pt
  inputiba layers --config small_cnn_32       the model of a run configuration

Columns: dotted name (what --layer takes), module type, output shape C x H x W for one input
of the model's preprocessing size (random weights are fine for this). A good bottleneck layer
is a mid-level one: spatial maps of 1/8 to 1/16 of the input size (28 x 28 or 14 x 14 for
224 x 224) with a few hundred channels, e.g. VGG16
features.17, ResNet layer2, EfficientNet-Lite0 _blocks.5.
"""


def register(subparsers: Any) -> None:
    """Add the ``layers`` parser."""
    p = subparsers.add_parser(
        "layers",
        help="list a model's layers with their output shapes (to choose --layer)",
        description="List a model's layers, in the order the forward pass runs them, with "
                    "their output shapes for one dummy input of the model's size.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="as for 'inputiba explain --model' (default: the --config's, else "
                        "efficientnet-lite0)")
    p.add_argument("-c", "--config", metavar="FILE", help="take the model from a run "
                                                          "configuration (file or shipped name)")
    p.add_argument("-w", "--weights", metavar="FILE", help="weights file (not needed for shapes)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="input size (default: the model's preprocessing size)")
    p.add_argument("--depth", type=int, metavar="N",
                   help="only names with at most N dotted parts")
    p.add_argument("--match", metavar="TEXT", help="only names containing TEXT")
    p.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                   help="show full tracebacks on errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the table; 0 on success."""
    import warnings

    import torch

    from inputiba.core.layers import layer_shapes
    from inputiba.models.resolve import resolve_model
    from inputiba.workflows.runconfig import RunConfig, load_run_config

    cfg = load_run_config(args.config) if args.config else RunConfig()
    name = args.model or cfg.model.name
    weights = args.weights if args.model or args.weights else cfg.model.weights
    with warnings.catch_warnings():  # random weights are fine for shapes
        warnings.simplefilter("ignore")
        rm = resolve_model(name, weights)
    size = tuple(args.size) if args.size else tuple(rm.input_size)
    if cfg.model.preprocessing is not None and not args.size and not args.model:
        size = cfg.model.preprocessing.build().hw
    probe = rm.preprocess(torch.zeros(3, *size))
    rows = layer_shapes(rm.model, probe[None].to(next(rm.model.parameters()).device))
    if args.depth is not None:
        rows = [r for r in rows if r[0].count(".") < args.depth]
    if args.match:
        rows = [r for r in rows if args.match in r[0]]
    width = max([len(r[0]) for r in rows] + [5])
    twidth = max([len(r[1]) for r in rows] + [4])
    print(f"# {rm.name}: input {probe.shape[0]}x{size[0]}x{size[1]}")
    print(f"# {'layer'.ljust(width - 2)}  {'type'.ljust(twidth)}  output")
    for lname, kind, shape in rows:
        print(f"{lname.ljust(width)}  {kind.ljust(twidth)}  {'x'.join(map(str, shape))}")
    return 0
