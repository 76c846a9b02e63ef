"""``inputiba explain-dataset``: explain a whole dataset, resumably, on one or many processes
(a thin layer over :func:`inputiba.workflows.dataset.explain_dataset`)."""

from __future__ import annotations

import argparse
import warnings
from typing import Any

from inputiba.cli.explain import _positive_int, _show_warning, parse_option
from inputiba.core.config import DEFAULT_PRESET, PRESETS

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  inputiba explain-dataset small_imagenet/attribution -o maps --estimation small_imagenet/estimation
      explain an ImageNet folder (images/val/<wnid>/*.JPEG + imagenet_class_index.json) for
      each image's folder class; rerun the same command to resume after a crash or Ctrl-C
  inputiba explain-dataset photos/ --targets predicted --subset subset.txt -o maps
      a plain folder, only the images listed in subset.txt (indices or names, one a line)
  torchrun --nproc_per_node=4 -m inputiba.cli explain-dataset data/ -o maps --batch-size 16
      one process per GPU (or CPU processes with gloo); rank 0 merges results.json
  inputiba explain-dataset data/ --precision bf16 --channels-last --batch-size 32
      mixed precision and channels-last weights on a GPU

outputs: the per-image files of 'inputiba explain' (<stem>.npy, .png, .feature.npy, .gan.npy;
flat '<class>__<stem>' or '--layout class' '<class>/<stem>'), records/rank<r>.jsonl (one line per
finished item, what a rerun skips), failures.jsonl (item, error), results.json (dataset order),
statistics.pt, run.json, summary.json, index.html, config.yaml (the resolved run configuration;
'--config OUT/config.yaml' reruns it). Exit status 0 when nothing failed, 1 otherwise.
"""


#: Run-configuration key -> argument name; ``estimation.source`` is --estimation or, for a
#: file, --statistics.
CONFIG_KEYS = {
    "model.name": "model", "model.weights": "weights", "model.layer": "layer",
    "estimation.source": "estimation", "estimation.n_samples": "estimation_samples",
    "preset": "preset", "seed": "seed", "output.dir": "out", "output.layout": "layout",
}


def register(subparsers: Any) -> None:
    """Add the ``explain-dataset`` parser."""
    from inputiba.cli._runconfig import Default, add_config_argument, add_ensemble_argument
    from inputiba.workflows.dataset import PRECISIONS
    from inputiba.workflows.explain import DEFAULT_OUT_DIR

    p = subparsers.add_parser(
        "explain-dataset",
        help="explain a dataset: resumable, failures logged, sharded under torchrun",
        description=(
            "Explain every image of a dataset folder (ImageNet layout or plain) with InputIBA. "
            "Rerunning the same command skips complete items; per-item errors go to "
            "failures.jsonl; under torchrun the items are sharded over the processes."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", metavar="FOLDER",
                   help="ImageNet-style folder (with imagenet_class_index.json) or plain folder")
    p.add_argument("--split", default="val", help="split sub-folder of an ImageNet layout "
                                                   "(default: %(default)s)")
    p.add_argument("--subset", metavar="FILE",
                   help="explain only these items: indices or names, one a line (or a JSON list)")
    p.add_argument("--class-index", metavar="FILE",
                   help="imagenet_class_index.json (default: FOLDER/imagenet_class_index.json)")
    p.add_argument("--targets", default="auto", metavar="MODE",
                   help="auto (folder class when known, else predicted), folder, predicted, or "
                        "one class index/name for all (default: %(default)s)")
    add_config_argument(p)
    p.add_argument("-m", "--model", default=Default("efficientnet-lite0"),
                   help="as for 'inputiba explain' (default: %(default)s)")
    p.add_argument("-w", "--weights", metavar="FILE", help="weights file to load into the model")
    p.add_argument("-l", "--layer", help="hidden layer of the feature bottleneck")
    p.add_argument("-e", "--estimation", metavar="FOLDER",
                   help="folder of images to estimate the layer statistics from (once, rank 0)")
    p.add_argument("--statistics", metavar="FILE", help="a saved statistics file instead")
    p.add_argument("--estimation-samples", type=_positive_int, metavar="N",
                   help="use at most N estimation images")
    p.add_argument("-p", "--preset", default=Default(DEFAULT_PRESET), choices=tuple(PRESETS),
                   help="settings (default: %(default)s)")
    p.add_argument("--set", dest="options", action="append", type=parse_option, default=[],
                   metavar="KEY=VALUE", help="override one InputIBA hyper-parameter (repeatable)")
    add_ensemble_argument(p)
    p.add_argument("-b", "--batch-size", type=_positive_int, default=8, metavar="N",
                   help="images explained together per process (default: %(default)s); the "
                        "max_batch setting (--set max_batch=N) bounds images per forward pass")
    p.add_argument("--precision", default="fp32", choices=tuple(PRECISIONS),
                   help="autocast the network to bf16/fp16 (default: %(default)s)")
    p.add_argument("--channels-last", action="store_true", help="channels-last weights")
    p.add_argument("--layout", default=Default("flat"), choices=("flat", "class"),
                   help="outputs in one folder, or one folder per class (default: %(default)s)")
    p.add_argument("--no-gallery", action="store_true", help="skip index.html at the end")
    p.add_argument("--gallery-limit", type=int, default=200, metavar="N",
                   help="index.html shows failed items and at most N explained ones "
                        "(default: %(default)s; results.json has all)")
    p.add_argument("--device", help="cpu, cuda (under torchrun: cuda:LOCAL_RANK); default: cuda "
                                    "when available")
    p.add_argument("--seed", type=int, default=Default(0), help="item i uses seed + i (times K with --ensemble K; default: 0)")
    p.add_argument("-o", "--out", default=Default(DEFAULT_OUT_DIR), metavar="DIR",
                   help="output folder (default: ./%(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                   help="show full tracebacks on errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``explain-dataset``; 0 when no item failed, 1 otherwise. Writes the resolved run
    configuration as ``OUT/config.yaml`` (see ``--config``)."""
    import os
    from pathlib import Path

    from inputiba.cli._runconfig import apply_config
    from inputiba.workflows.dataset import explain_dataset
    from inputiba.workflows.runconfig import RunConfigError, write_run_config

    statistics = args.statistics
    if statistics and args.estimation:
        raise RunConfigError("give --estimation FOLDER or --statistics FILE, not both")
    if statistics:
        args.estimation = statistics
    cfg = apply_config(args, CONFIG_KEYS)
    estimation = args.estimation
    if estimation is not None and Path(estimation).is_file():
        statistics, estimation = estimation, None
    else:
        statistics = None
    pre = cfg.model.preprocessing

    targets: Any = args.targets
    if targets.strip().lstrip("-").isdigit():
        targets = int(targets)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        summary = explain_dataset(
            args.dataset, model=args.model, weights=args.weights, layer=args.layer,
            targets=targets, split=args.split, subset=args.subset, class_index=args.class_index,
            estimation=estimation, statistics=statistics,
            estimation_samples=args.estimation_samples, preset=args.preset,
            options=dict(args.options), batch_size=args.batch_size, device=args.device,
            seed=args.seed, out_dir=args.out, layout=args.layout, precision=args.precision,
            channels_last=args.channels_last, gallery=not args.no_gallery,
            gallery_limit=args.gallery_limit,
            progress=not args.quiet,
            preprocess=pre.build() if pre is not None else None,
        )
    if os.environ.get("RANK", "0") == "0":  # one writer under torchrun
        write_run_config(cfg, args.out)
    return 0 if summary.failed == 0 else 1
