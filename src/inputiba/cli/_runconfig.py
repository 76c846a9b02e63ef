"""``--config FILE`` for the commands that run attributions.

Command-line defaults are wrapped in :class:`Default`, so after parsing a flag the user gave
explicitly is a plain value and one left alone is still a :class:`Default`. :func:`apply_config`
then fills the untouched flags from the configuration file (explicit flags win), unwraps the
rest, and returns the resolved :class:`~inputiba.workflows.runconfig.RunConfig` that the command writes
into its output folder (:func:`inputiba.workflows.runconfig.write_run_config`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from inputiba.workflows.runconfig import RunConfig, RunConfigError, load_run_config

__all__ = ["Default", "add_config_argument", "add_ensemble_argument", "apply_config",
           "unwrap_defaults"]


class Default:
    """A parser default, told apart from the same value given on the command line."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:  # what %(default)s shows in --help
        return str(self.value)

    def __repr__(self) -> str:
        return f"Default({self.value!r})"


def add_config_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--config FILE``."""
    p.add_argument("-c", "--config", metavar="FILE",
                   help="a run configuration (YAML file, e.g. a run's config.yaml, or a shipped "
                        "name such as vgg16_imagenet); flags given explicitly override its values")


def unwrap_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Replace every :class:`Default` in ``args`` by its value (idempotent)."""
    for key, value in vars(args).items():
        if isinstance(value, Default):
            setattr(args, key, value.value)
    return args


def _seed_from_options(args: argparse.Namespace, path: str | None) -> None:
    """``--set seed=N`` is the run's seed: move it from ``args.options`` to ``args.seed`` (as an
    explicit value), so that it seeds the run and is what ``config.yaml`` records.

    Raises:
        RunConfigError: ``--seed`` and ``--set seed=`` both given with different values.
    """
    if not hasattr(args, "options") or not hasattr(args, "seed"):
        return
    raw = args.options.value if isinstance(args.options, Default) else args.options
    options = dict(raw)
    if "seed" not in options:
        return
    value = options.pop("seed")
    if isinstance(value, bool) or not isinstance(value, int):
        raise RunConfigError(f"seed must be an integer, got {value!r} (--set seed={value})")
    given = args.seed
    if not isinstance(given, Default) and given != value:
        raise RunConfigError(f"--seed {given} and --set seed={value} disagree; give one")
    args.seed = value
    args.options = list(options.items())


def add_ensemble_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--ensemble K``, the shortcut of ``--set ensemble=K``."""
    p.add_argument("--ensemble", type=int, metavar="K",
                   help="InputIBA only: each map is the mean of K runs with independent seeds "
                        "(about K times the work; same as --set ensemble=K; default 1; "
                        "--set ensemble_reduce=min|median combines them otherwise)")


def _ensemble_into_options(args: argparse.Namespace, inputiba_options: bool) -> None:
    """``--ensemble K`` is ``--set ensemble=K``: add it to ``args.options`` (checked with the
    other settings when the configuration is built).

    Raises:
        RunConfigError: ``--ensemble`` and ``--set ensemble=`` both given with different values,
            or ``--ensemble`` for a method other than InputIBA.
    """
    k = getattr(args, "ensemble", None)
    if k is None:
        return
    if not inputiba_options or not hasattr(args, "options"):
        raise RunConfigError(f"--ensemble {k}: ensembles are an InputIBA setting; "
                             "drop it for this method")
    raw = args.options.value if isinstance(args.options, Default) else args.options
    options = dict(raw)
    if "ensemble" in options and options["ensemble"] != k:
        raise RunConfigError(f"--ensemble {k} and --set ensemble={options['ensemble']} "
                             "disagree; give one")
    options["ensemble"] = k
    args.options = list(options.items())


def apply_config(args: argparse.Namespace, mapping: Mapping[str, str],
                 inputiba_options: bool = True, task: str = "image") -> RunConfig:
    """Merge ``args.config`` (if any) and the command line into ``args``; return the result.

    Args:
        args: parsed arguments whose defaults are :class:`Default` instances.
        mapping: configuration key (dotted) -> argument name, e.g. ``{"model.layer": "layer"}``.
        inputiba_options: merge ``args.options`` (``--set KEY=VALUE`` pairs) with the file's
            ``inputiba`` settings (``--set`` wins per key) and write them back as the merged
            list; False leaves ``args.options`` alone (options of another method).
        task: the command's task, ``"image"`` or ``"text"``; a file of the other is refused.

    Returns:
        The run's configuration, values as the command will use them.

    Raises:
        RunConfigError: a bad file, a text configuration for an image command, unknown setting.
    """
    path = getattr(args, "config", None)
    cfg = load_run_config(path) if path else RunConfig(task=task)
    if cfg.task != task:
        hint = ("'inputiba explain-text'" if cfg.task == "text"
                else "'inputiba explain' or 'inputiba explain-dataset'")
        raise RunConfigError(f"{cfg.source} is a {cfg.task} configuration; use it with {hint}")
    _seed_from_options(args, path)
    _ensemble_into_options(args, inputiba_options)
    changes: dict[str, Any] = {}
    for key, dest in mapping.items():
        value = getattr(args, dest)
        if isinstance(value, Default) and path:
            continue  # the file's value (or the schema default) stands
        changes[key] = value.value if isinstance(value, Default) else value
    if not path:  # no file: the flags' values, defaults included, are the configuration
        base = {k: v for k, v in changes.items() if v is not None}
        cfg = cfg.with_overrides(**base)
    else:
        cfg = cfg.with_overrides(**changes)
    if inputiba_options and hasattr(args, "options"):
        options = dict(args.options.value if isinstance(args.options, Default) else args.options)
        cfg = cfg.with_overrides(inputiba={**cfg.inputiba, **options})
        args.options = list(cfg.inputiba.items())
    unwrap_defaults(args)
    d = cfg.to_dict(resolved=False)
    for key, dest in mapping.items():
        node: Any = d
        for part in key.split("."):
            node = node[part] if node is not None else None
        setattr(args, dest, node)
    return cfg
