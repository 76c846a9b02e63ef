"""The ``inputiba`` command line: a thin layer over the Python API.

Each subcommand lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (a callable taking
the parsed ``argparse.Namespace`` and returning an exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from inputiba import __version__

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS: tuple[str, ...] = (
    "explain", "explain_text", "evaluate", "compare", "explain_dataset", "split_dataset",
    "layers", "train_text",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inputiba",
        description="Explain PyTorch classifiers with InputIBA (Zhang et al., NeurIPS 2021).",
    )
    parser.add_argument("--version", action="version", version=f"inputiba {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("inputiba: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line unless --traceback
        if args.traceback:
            raise
        print(f"inputiba: error: {error_line(exc)}", file=sys.stderr)
        return 1


def error_line(exc: BaseException, limit: int = 500) -> str:
    """One line for an error: the message of inputiba's own errors (:class:`InputIBAError`,
    which name the culprit and the fix); for anything else its type too, and a pointer to
    ``--traceback``."""
    from inputiba.errors import InputIBAError

    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    if isinstance(exc, InputIBAError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text} (run with --traceback for details)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
