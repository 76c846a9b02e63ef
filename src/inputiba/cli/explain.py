"""``inputiba explain``: explain images with InputIBA (a thin layer over
:func:`inputiba.workflows.explain.explain_images`)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

__all__ = ["register", "run", "parse_option"]

EXAMPLES = """\
examples:
  inputiba explain
      explain the built-in photos (chelsea, coffee, astronaut, ...) with the packaged
      EfficientNet-Lite0 and the consensus preset; results in ./inputiba-out/index.html
  inputiba explain cat.jpg photos/ -o out
      explain a file and every image in a folder (jpg, png, bmp, tiff, webp)
  inputiba explain cat.jpg --target tabby        (or --target 281; names as in ImageNet)
  inputiba explain photos/ --estimation imagenet_val_sample/ --preset paper
      estimate the layer statistics from your own images and use the paper's settings
  inputiba explain x.png --model resnet50 --weights resnet50.pth --layer layer2
  inputiba explain x.png --model mypkg.models:build --weights net.pt --layer features.6
      a model from your own code: build() returns a model, (model, preprocess) or
      (model, preprocess, class_names)
  inputiba explain x.png --set input_steps=20 --set gan_epochs=5
      override single InputIBA hyper-parameters (keyword arguments of inputiba.InputIBA)
  inputiba explain x.png --config vgg16_imagenet --weights my_vgg16.pth
      a shipped run configuration (or a YAML file); explicit flags override its values
  inputiba explain x.png --config inputiba-out/config.yaml -o again
      reproduce an earlier run from the configuration it wrote

outputs (per image <stem>): <stem>.npy (float32 map at the original size, in [0, 1]),
<stem>.png (overlay), <stem>.feature.npy (stage 1, bits), <stem>.gan.npy (stage 2 mask);
and results.json, index.html, config.yaml (the resolved run configuration). Exit status 0
when every image was explained, 1 otherwise.
"""


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value); the value is read as JSON when it parses, else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = {"true": True, "false": False, "none": None}.get(value.lower(), value)
    return key.strip().replace("-", "_"), parsed


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


#: Run-configuration key -> argument name (see :mod:`inputiba.cli._runconfig`).
CONFIG_KEYS = {
    "model.name": "model", "model.weights": "weights", "model.layer": "layer",
    "estimation.source": "estimation", "estimation.n_samples": "estimation_samples",
    "preset": "preset", "seed": "seed", "output.dir": "out",
}


def register(subparsers: Any) -> None:
    """Add the ``explain`` parser."""
    from inputiba.cli._runconfig import Default, add_config_argument, add_ensemble_argument
    from inputiba.core.config import DEFAULT_PRESET, PRESETS
    from inputiba.workflows.explain import DEFAULT_OUT_DIR

    p = subparsers.add_parser(
        "explain",
        help="explain images with InputIBA: maps, overlays, an HTML gallery",
        description=(
            "Explain images with InputIBA and write, for each, the attribution map (.npy), an "
            "overlay (.png), the stage-1 and stage-2 maps, plus results.json and an offline "
            "HTML gallery. Without images, explains the built-in photos."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="*", metavar="IMAGE_OR_FOLDER",
                   help="image files and/or folders of images (default: the built-in photos)")
    add_config_argument(p)
    p.add_argument("-m", "--model", default=Default("efficientnet-lite0"),
                   help="efficientnet-lite0 (built in, offline), a torchvision name (resnet50, "
                        "vgg16, ...), timm:NAME, or module:factory / file.py:factory "
                        "(default: %(default)s)")
    p.add_argument("-w", "--weights", metavar="FILE", help="weights file to load into the model")
    p.add_argument("-l", "--layer", help="hidden layer of the feature bottleneck (dotted name; "
                                         "default: the model's usual one, e.g. _blocks.5)")
    p.add_argument("-t", "--target", metavar="CLASS",
                   help="class index or class name to explain (default: the predicted class)")
    p.add_argument("-e", "--estimation", "--statistics", dest="estimation", metavar="PATH",
                   help="folder of images to estimate the layer statistics from (cached), or a "
                        "statistics file saved by LayerStatistics.save (default: a built-in "
                        "stand-in of random crops of the built-in photos, with a warning)")
    p.add_argument("--estimation-samples", type=_positive_int, metavar="N",
                   help="use at most N estimation images (default: all; 256 for the stand-in)")
    p.add_argument("--method", default="inputiba", metavar="METHOD",
                   help="attribution method: inputiba (default), iba, gradcam, "
                        "integrated_gradients, guided_backprop, deepshap, extremal_perturbation, "
                        "random; --set KEY=VALUE then sets that method's options")
    p.add_argument("-p", "--preset", default=Default(DEFAULT_PRESET), choices=tuple(PRESETS),
                   help="settings (default: %(default)s): 'consensus' (the minimum of 11 short "
                        "runs: maps that change little with the seed, in half the time of "
                        "'paper'), 'paper' (the original configuration), 'fast' (about 5x "
                        "faster than consensus), 'fast-nogan' (fast without the WGAN stage) or "
                        "'stable'")
    p.add_argument("--set", dest="options", action="append", type=parse_option, default=[],
                   metavar="KEY=VALUE", help="override one InputIBA hyper-parameter (repeatable)")
    add_ensemble_argument(p)
    p.add_argument("-b", "--batch-size", type=_positive_int, default=2, metavar="N",
                   help="images explained together: faster per image, but each costs about "
                        "2.5 GB of memory with EfficientNet-Lite0 (default: %(default)s)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--seed", type=int, default=Default(0), help="random seed (default: %(default)s)")
    p.add_argument("-o", "--out", default=Default(DEFAULT_OUT_DIR), metavar="DIR",
                   help="output folder (default: ./%(default)s)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars and no summary (errors and warnings still shown)")
    p.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                   help="show full tracebacks on errors")
    p.set_defaults(func=run)


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    text = " ".join(str(message).split())
    print(f"inputiba: warning: {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run ``explain``; 0 when every image was explained, 1 when any failed.

    Writes the resolved run configuration as ``OUT/config.yaml`` (see ``--config``).
    """
    from inputiba.cli._runconfig import apply_config
    from inputiba.workflows.explain import explain_images
    from inputiba.workflows.runconfig import write_run_config

    cfg = apply_config(args, CONFIG_KEYS, inputiba_options=args.method == "inputiba")
    pre = cfg.model.preprocessing

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        records = explain_images(
            args.images,
            model=args.model,
            weights=args.weights,
            layer=args.layer,
            target=args.target,
            estimation=args.estimation,
            preset=args.preset,
            options=dict(args.options),
            batch_size=args.batch_size,
            device=args.device,
            seed=args.seed,
            out_dir=args.out,
            estimation_samples=args.estimation_samples,
            progress=not args.quiet,
            method=args.method,
            preprocess=pre.build() if pre is not None else None,
        )
    write_run_config(cfg, args.out)
    return 0 if records and all(r["status"] == "ok" for r in records) else 1
