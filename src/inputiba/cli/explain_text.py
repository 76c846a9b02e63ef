"""``inputiba explain-text``: InputIBA token scores for review texts.

Usage::

    inputiba explain-text "A gorgeous, witty film." "Dull and lifeless." --out runs/text
    inputiba explain-text --file reviews.txt --model minilm --preset fast

Writes::

    OUT/results.json      per text: tokens, scores, predicted label and probability, target
    OUT/explanation.html  the tokens highlighted on a colour scale with a legend (offline)

and prints each text with coloured tokens (``--no-color`` for plain text).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run", "read_texts"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "explain-text",
        help="explain a sentiment classifier's predictions on texts (token scores)",
        description="InputIBA token attributions for texts, with the packaged GloVe-LSTM or "
        "MiniLM sentiment classifiers (trained offline on first use) or a checkpoint.",
    )
    p.add_argument("texts", nargs="*", help="texts to explain")
    p.add_argument("--file", help="a UTF-8 file with one text per line (blank lines skipped)")
    p.add_argument(
        "--model", default="lstm",
        help="'lstm' (GloVe-50d BiLSTM), 'minilm' (all-MiniLM-L6-v2 + head), or a checkpoint "
        "written by python -m inputiba.text.train (default: lstm)",
    )
    p.add_argument("--out", default="inputiba-text", help="output folder (default: %(default)s)")
    p.add_argument("--preset", choices=["paper", "fast"], default="paper")
    p.add_argument("--target", type=int, help="class to explain for every text "
                   "(default: each text's predicted class); 0 negative, 1 positive")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override an InputIBA setting, e.g. --set input_steps=20 (repeatable)")
    p.add_argument("--no-color", action="store_true", help="plain terminal output")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no terminal listing, no progress bars")
    p.set_defaults(func=run)


def read_texts(texts: list[str], file: str | None) -> list[str]:
    """The texts from the arguments and the file, in order; raises if there are none."""
    out = [t for t in texts if t.strip()]
    if file:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"--file {file}: no such file")
        out += [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    if not out:
        raise ValueError("no texts: give them as arguments or with --file (one per line)")
    return out


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: expected NAME=VALUE")
        name, value = pair.split("=", 1)
        try:
            out[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[name.strip()] = value
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from ..text.explain import TextInputIBA, explain_texts
    from ..text.models import load_text_model
    from ..text.render import html_page, terminal_tokens

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = read_texts(args.texts, args.file)
    tm = load_text_model(args.model)
    explainer = TextInputIBA.for_model(
        tm, preset=args.preset, progress=False, seed=args.seed, **_overrides(args.set)
    )
    results = explain_texts(
        texts, tm, explainer=explainer, target=args.target, batch_size=args.batch_size,
        progress=not args.quiet,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = [r.to_dict() for r in results]
    payload = {
        "model": args.model,
        "model_kind": tm.kind,
        "class_names": list(tm.class_names),
        "feature_layer": explainer.layer,
        "embedding_layer": explainer.embedding_layer,
        "preset": args.preset,
        "config": explainer.config.to_dict(),
        "test_accuracy": tm.meta.get("test_accuracy"),
        "results": records,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    (out / "explanation.html").write_text(html_page(records), encoding="utf-8")
    if not args.quiet:
        color = not args.no_color and sys.stdout.isatty()
        for r in results:
            print(f"{r.label} (p={r.probability:.3f})"
                  + (f", explaining {r.target_label}" if r.target_label != r.label else ""))
            print("  " + terminal_tokens(r.tokens, r.scores, color=color))
        print(f"wrote {out / 'results.json'} and {out / 'explanation.html'}")
    return 0
