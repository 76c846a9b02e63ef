"""``inputiba explain-text``: InputIBA token scores for review texts.

Usage::

    inputiba explain-text "A gorgeous, witty film." "Dull and lifeless." --out runs/text
    inputiba explain-text --file reviews.txt --model minilm --preset fast
    inputiba explain-text "A gorgeous film." --method integrated_gradients --set n_steps=20
    inputiba explain-text "A gorgeous film." --config lstm_text
    inputiba explain-text "A gorgeous film." --config inputiba-text/lstm/config.yaml

Writes::

    OUT/results.json      per text: tokens, scores, predicted label and probability, target;
                          the method and its settings
    OUT/explanation.html  the tokens highlighted on a colour scale with a legend (offline)
    OUT/config.yaml       the resolved run configuration (reproduce with --config)

and prints each text with coloured tokens (``--no-color`` for plain text).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["register", "run", "read_texts", "CONFIG_KEYS"]

#: Run-configuration key -> argument name (see :mod:`inputiba.cli._runconfig`).
CONFIG_KEYS = {
    "model.name": "model", "model.layer": "layer", "estimation.n_samples": "estimation_samples",
    "preset": "preset", "seed": "seed", "output.dir": "out",
}


def register(subparsers: Any) -> None:
    from inputiba.cli._runconfig import Default, add_config_argument, add_ensemble_argument
    from inputiba.cli.explain import _positive_int, parse_option

    p = subparsers.add_parser(
        "explain-text",
        help="explain a sentiment classifier's predictions on texts (token scores)",
        description="InputIBA token attributions for texts, with the packaged GloVe-LSTM or "
        "MiniLM sentiment classifiers (trained offline on first use) or a checkpoint.",
    )
    p.add_argument("texts", nargs="*", help="texts to explain")
    p.add_argument("--file", help="a UTF-8 file with one text per line (blank lines skipped)")
    add_config_argument(p)
    p.add_argument(
        "--model", default=Default("lstm"),
        help="'lstm' (GloVe-50d BiLSTM), 'minilm' (all-MiniLM-L6-v2 + head), or a checkpoint "
        "written by python -m inputiba.models.text_training (default: lstm)",
    )
    p.add_argument("--layer", help="feature-bottleneck layer (default: the model's, e.g. lstm1)")
    p.add_argument("--estimation-samples", type=_positive_int, default=Default(1000),
                   metavar="N", help="training snippets for the token statistics "
                   "(cached; default: %(default)s)")
    p.add_argument("--method", default="inputiba",
                   help="inputiba (default), integrated_gradients or lime; for a baseline, "
                   "--set KEY=VALUE sets its options (e.g. n_steps=20, n_samples=300)")
    p.add_argument("--out", default=Default("inputiba-text"),
                   help="output folder (default: %(default)s)")
    from inputiba.core.config import DEFAULT_TEXT_PRESET, PRESETS

    p.add_argument("--preset", choices=tuple(PRESETS), default=Default(DEFAULT_TEXT_PRESET),
                   help=f"InputIBA preset (default {DEFAULT_TEXT_PRESET}, as TextInputIBA: on "
                   "both text models no worse than paper on deletion and insertion AUC at a "
                   "tenth of its time; paper, the original settings, takes ~0.7 s per text "
                   "with the LSTM and ~25 s with MiniLM on a 2-core CPU)")
    p.add_argument("--target", type=int, help="class to explain for every text "
                   "(default: each text's predicted class); 0 negative, 1 positive")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=Default(0))
    p.add_argument("--set", dest="options", action="append", type=parse_option, default=[],
                   metavar="NAME=VALUE",
                   help="override an InputIBA setting, e.g. --set input_steps=20 (repeatable)")
    add_ensemble_argument(p)
    p.add_argument("--no-color", action="store_true", help="plain terminal output")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no terminal listing, no progress bars")
    p.set_defaults(func=run)


def read_texts(texts: list[str], file: str | None) -> list[str]:
    """The texts from the arguments and the file, in order; raises if there are none."""
    out = [t for t in texts if t.strip()]
    if file:
        path = Path(file)
        from inputiba.errors import TextInputError

        if not path.is_file():
            raise TextInputError(f"--file {file}: no such file")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise TextInputError(f"--file {file}: cannot be read as UTF-8 text "
                                 f"({type(exc).__name__})") from None
        out += [line.strip() for line in lines if line.strip()]
    if not out:
        from inputiba.errors import TextInputError

        raise TextInputError("no texts: give them as arguments or with --file (one per line)")
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``explain-text``; writes results.json, explanation.html and config.yaml."""
    import torch

    from inputiba.cli._runconfig import apply_config
    from inputiba.cli.explain import _show_warning
    from inputiba.data.io import check_output_dir
    from inputiba.modalities.text import TextInputIBA
    from inputiba.models.text_training import load_text_model
    from inputiba.report.text import terminal_tokens
    from inputiba.workflows.runconfig import RunConfigError, write_run_config
    from inputiba.workflows.text import (
        _is_inputiba,
        explain_texts,
        text_explainer_for,
        write_text_results,
    )

    inputiba = _is_inputiba(args.method)
    cfg = apply_config(args, CONFIG_KEYS, inputiba_options=inputiba, task="text")
    if cfg.estimation.source is not None:
        raise RunConfigError(
            f"estimation.source {cfg.estimation.source!r}{' in ' + cfg.source if cfg.source else ''}"
            ": text statistics always come from the training snippets; leave it null"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    texts = read_texts(args.texts, args.file)
    check_output_dir(args.out)  # before the model is loaded or anything explained
    tm = load_text_model(args.model)
    options = dict(args.options)
    explainer: Any
    if inputiba:
        explainer = TextInputIBA.for_model(
            tm, preset=args.preset, n_samples=args.estimation_samples or 1000, progress=False,
            layer=args.layer, seed=args.seed, **options,
        )
    else:
        explainer = text_explainer_for(tm, args.method, seed=args.seed, **options)
    with warnings.catch_warnings():  # one line each (a cut text, a text of unknown words)
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        results = explain_texts(
            texts, tm, explainer=explainer, target=args.target, batch_size=args.batch_size,
            progress=not args.quiet and sys.stderr.isatty(),  # no redraws in logs
        )
    out = write_text_results(args.out, results, tm, explainer, model_name=args.model,
                             preset=args.preset, options=options)
    write_run_config(cfg, out)
    if not args.quiet:
        color = not args.no_color and sys.stdout.isatty()
        for r in results:
            print(f"{r.label} (p={r.probability:.3f})"
                  + (f", explaining {r.target_label}" if r.target_label != r.label else ""))
            print("  " + terminal_tokens(r.tokens, r.scores, color=color))
        print(f"wrote {out / 'results.json'}, {out / 'explanation.html'} and "
              f"{out / 'config.yaml'}")
    return 0
