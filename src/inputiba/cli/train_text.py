"""``inputiba train-text``: train a packaged sentiment classifier on the Rotten Tomatoes
snippets (a thin layer over :func:`inputiba.models.text_training.train_text_model`)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``train-text`` parser."""
    p = subparsers.add_parser(
        "train-text",
        help="train the packaged text classifiers (lstm, minilm) offline, on the CPU",
        description="Train a sentiment classifier on the Rotten Tomatoes snippets (offline) "
                    "and save it where `inputiba explain-text --model KIND` finds it.",
    )
    p.add_argument("kind", choices=["lstm", "minilm"])
    p.add_argument("--out", help="checkpoint path (default: the inputiba cache folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="default: 6 (lstm), 60 (minilm head)")
    p.add_argument("--num-classes", type=int, choices=[1, 2], default=2,
                   help="2 softmax logits or 1 sigmoid logit")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from inputiba.models.text_training import train_text_model

    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs: dict[str, Any] = {"seed": args.seed, "num_classes": args.num_classes}
    if args.epochs:
        kwargs["epochs"] = args.epochs
    state = train_text_model(args.kind, out=args.out, **kwargs)
    print(f"test_accuracy {state['test_accuracy']:.4f}")
    return 0
