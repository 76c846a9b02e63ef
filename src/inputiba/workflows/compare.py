"""Compare attribution methods on one model and dataset with the evaluation suite.

:func:`compare_methods` gives every image a map per method (saved as float ``.npy`` at the
image's original size, the format :func:`inputiba.metrics.evaluate.evaluate_maps` reads), scores
the maps, and gathers the summaries into a Markdown table and an HTML report with a figure grid::

    OUT/targets.json                 the class explained per image (shared by all methods)
    OUT/targets.settings.json        the model (and weights) that chose them
    OUT/maps/<method>/<stem>.npy     (H, W) float32 maps in [0, 1]
    OUT/maps/<method>/timing.json    seconds per image
    OUT/maps/<method>/settings.json  what the maps depend on (model, layer, method options)
    OUT/eval/<method>/summary.json   the evaluation (plus per_image/, curves/)
    OUT/comparison.md                mean ± std per metric and method, n per metric
    OUT/grid.png, OUT/report.html    images x methods, and the table

The defaults compare on every built-in photo (14): deletion and insertion on all of them with
the model's class, the box metrics on the five with boxes (the box class the model rates
highest). Resumable: a map that exists is never recomputed, and a method's evaluation is rerun
only when one of its maps is newer than its ``summary.json`` (or when asked to). A run whose
settings for a method differ from those its folder's maps were made with stops with an error
naming them, instead of mixing maps of two settings.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from inputiba.core.config import DEFAULT_PRESET
from inputiba.data.io import save_json, save_npy, save_text
from inputiba.data.maps import EvalItem, builtin_items
from inputiba.errors import ConfigError
from inputiba.methods import available_explainers, get_explainer
from inputiba.methods.base import Explainer, normalize_map
from inputiba.metrics.evaluate import EvaluationSettings, evaluate_maps
from inputiba.models.image import load_model, model_fingerprint
from inputiba.report.compare import METRICS, comparison_table, figure_grid, write_report
from inputiba.workflows.records import is_terminal

__all__ = [
    "CompareItem",
    "CompareSettings",
    "ComparisonResult",
    "METRICS",
    "compare_methods",
    "choose_targets",
    "compute_maps",
    "evaluate_method",
    "comparison_table",
    "figure_grid",
    "write_report",
    "build_explainer_factory",
]

#: An image of the comparison (the evaluation's item: name, pixels, box classes, target, boxes).
CompareItem = EvalItem


def _compare_evaluation() -> EvaluationSettings:
    # every image with the model's class: the comparison ranks methods on the same images, so
    # the paper's 0.6 probability filter (which keeps 1 of the 14 built-in photos) is off.
    # Step 0.02: on the 112 curves of the default comparison the AUCs moved by at most 0.005
    # (mean 0.0002) against step 0.01, and scoring takes half the forward passes.
    return EvaluationSettings(step=0.02, min_probability=0.0, progress=False)


@dataclass
class CompareSettings:
    """How :func:`compare_methods` runs.

    Attributes:
        methods: registry names (:func:`inputiba.methods.available_explainers`).
        layer: InputIBA/IBA bottleneck layer (default: the model's).
        gradcam_layer: Grad-CAM's layer (default: the last spatial one).
        preset: InputIBA preset; ``inputiba_options`` override single settings.
        statistics: a :class:`~inputiba.core.statistics.LayerStatistics` file for ``layer``;
            default: estimated once from ``estimation_samples`` built-in stand-in crops and
            cached in the output folder.
        seed: seed of every stochastic method.
        ep_steps, ig_steps: Extremal Perturbation's and Integrated Gradients' steps.
        batch_size: images per attribution batch.
        evaluation: how the maps are scored (min_probability 0 by default: every image).
        re_evaluate: rerun the evaluation even when no map changed.
    """

    methods: Sequence[str] = field(default_factory=lambda: tuple(available_explainers()))
    layer: str | None = None
    gradcam_layer: str | None = None
    preset: str = DEFAULT_PRESET
    inputiba_options: dict[str, Any] = field(default_factory=dict)
    statistics: str | Path | None = None
    estimation_samples: int = 200
    seed: int = 0
    ep_steps: int = 150
    ig_steps: int = 50
    batch_size: int = 4
    evaluation: EvaluationSettings = field(default_factory=_compare_evaluation)
    device: str = "cpu"
    progress: bool = True
    re_evaluate: bool = False


@dataclass
class ComparisonResult:
    """``table`` (Markdown, as ``comparison.md``), each method's evaluation summary, mean
    seconds per image, the images and targets used, and the output folder."""

    table: str
    summaries: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    targets: dict[str, int]
    out: Path


def choose_targets(
    model: nn.Module,
    preprocess: Any,
    items: Sequence[CompareItem],
    path: Path,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, Any]]:
    """The class to explain per image, chosen once and shared by every method.

    A given ``target`` wins; else the box class the model rates highest; else the prediction.
    Stored in ``path`` (``{stem: {"target", "probability", "source"}}``) and read back on a
    rerun, so that resumed runs explain the same classes.
    """
    known: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
    todo = [it for it in items if it.name not in known]
    for it in todo:
        x = preprocess(it.image).unsqueeze(0).to(device)
        with torch.no_grad():
            probs = torch.softmax(model(x).float(), 1)[0].cpu()
        if it.target is not None:
            target, source = int(it.target), "dataset"
        else:
            ids = sorted({c for cls in (it.class_ids or []) for c in cls})
            if ids:
                target, source = max(ids, key=lambda c: probs[c].item()), "boxes"
            else:
                target, source = int(probs.argmax()), "prediction"
        known[it.name] = {"target": target, "probability": probs[target].item(), "source": source}
    if todo:
        save_json(path, known)
    return known


def compute_maps(
    explainer_factory: Any,
    method: str,
    model: nn.Module,
    preprocess: Any,
    items: Sequence[CompareItem],
    targets: dict[str, int],
    out: Path,
    *,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    progress: bool = True,
    settings: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Maps of ``method`` for the items that have none yet in ``out``; returns seconds/image.

    Args:
        explainer_factory: ``() -> Explainer`` (called only when something is missing).
        items: images to explain (only those with a target in ``targets``).
        out: the method's folder; each map is ``<stem>.npy``, (H, W) float32 in [0, 1] at the
            image's original size (bilinear from the model's input size, then divided by its
            maximum again, as the explainers' convention).
        settings: what the maps depend on (JSON-able), kept in ``out/settings.json``.

    Returns:
        ``{stem: seconds}`` for every map in ``out`` (also in ``out/timing.json``).

    Raises:
        ConfigError: ``out/settings.json`` records other ``settings`` than these.
    """
    out.mkdir(parents=True, exist_ok=True)
    if settings is not None:
        _check_settings(out / "settings.json", f"{method} maps", settings)
    timing_path = out / "timing.json"
    timing: dict[str, float] = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    missing = [it for it in items if it.name in targets and not (out / f"{it.name}.npy").exists()]
    if not missing:
        return timing
    explainer: Explainer = explainer_factory()
    batches = [missing[i : i + batch_size] for i in range(0, len(missing), batch_size)]
    live = progress and is_terminal(sys.stderr)  # a bar where it redraws; else a line a batch
    for k, batch in enumerate(tqdm(batches, desc=method, unit="batch", disable=not live), 1):
        x = torch.stack([preprocess(it.image) for it in batch]).to(device)
        t = torch.tensor([targets[it.name] for it in batch], device=device)
        t0 = time.perf_counter()
        maps = explainer.attribute(x, t)
        seconds = (time.perf_counter() - t0) / len(batch)
        for it, m in zip(batch, maps, strict=True):
            h, w = it.image.shape[:2]
            full = F.interpolate(m[None].float().cpu(), size=(h, w), mode="bilinear",
                                 align_corners=False)[0].clamp(min=0)
            full = normalize_map(full)[0]  # resizing may lower the peak: back to max 1
            save_npy(out / f"{it.name}.npy", full.numpy().astype(np.float32))
            timing[it.name] = seconds
        save_json(timing_path, timing)
        if progress and not live:
            print(f"inputiba compare: {method} [{k}/{len(batches)}] "
                  f"{', '.join(it.name for it in batch)}: {seconds:.1f} s per image",
                  file=sys.stderr)
    return timing


def _check_settings(path: Path, what: str, settings: dict[str, Any]) -> None:
    """Record ``settings`` in ``path``, or refuse when ``path`` records other settings (the
    outputs next to it, ``what``, were made with those)."""
    out = path.parent
    wanted = json.loads(json.dumps(settings, default=str))
    if path.exists():
        had = json.loads(path.read_text(encoding="utf-8"))
        if had != wanted:
            diff = ", ".join(f"{k} {had.get(k)!r} -> {wanted.get(k)!r}"
                             for k in sorted(set(had) | set(wanted)) if had.get(k) != wanted.get(k))
            raise ConfigError(f"the {what} in {out} were made with other settings "
                              f"({diff}); use another output folder, or delete {out} to "
                              "recompute them")
        return
    save_json(path, wanted)


def evaluate_method(
    maps_dir: Path,
    out: Path,
    items: Sequence[EvalItem],
    model: tuple[nn.Module, Callable[[Any], torch.Tensor]],
    targets: dict[str, int],
    settings: EvaluationSettings,
    force: bool = False,
    announce: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Score a method's maps with :func:`~inputiba.metrics.evaluate.evaluate_maps`.

    Skipped when ``out/summary.json`` is newer than every map (unless ``force``); otherwise
    ``announce()`` (if given) is called first. Returns the summary.
    """
    summary = out / "summary.json"
    newest = max((p.stat().st_mtime for p in maps_dir.glob("*.npy")), default=0.0)
    if not force and summary.exists() and summary.stat().st_mtime >= newest:
        return json.loads(summary.read_text(encoding="utf-8"))
    if announce is not None:
        announce()
    res = evaluate_maps(maps_dir, out, items=items, model=model, targets=targets,
                        settings=settings)
    return res.summary


def _statistics_loader(
    model: nn.Module, preprocess: Any, layer: str, out: Path, s: CompareSettings, model_name: str
) -> Callable[[], Any]:
    """``() -> LayerStatistics``: the given file, else estimated once and cached in ``out``."""
    cache: dict[str, Any] = {}

    def load() -> Any:
        from inputiba.core.statistics import LayerStatistics, estimate_layer_statistics
        from inputiba.data.assets import standin_estimation_images

        if "stats" not in cache:
            path = Path(s.statistics) if s.statistics else out / f"statistics_{layer}.pt"
            if path.exists():
                cache["stats"] = LayerStatistics.load(path)
                return cache["stats"]
            images = standin_estimation_images(n=s.estimation_samples, seed=0)
            batches = [torch.stack([preprocess(im) for im in images[i : i + 16]]).to(s.device)
                       for i in range(0, len(images), 16)]
            print(f"inputiba compare: estimating {layer} statistics from {len(images)} built-in "
                  "stand-in crops (pass statistics= / --statistics for a real estimation set)",
                  file=sys.stderr)
            stats = estimate_layer_statistics(model, layer, batches, n_samples=None,
                                              progress=s.progress and is_terminal(sys.stderr))
            stats.save(path, model=model_name, layer=layer, source="standin")
            cache["stats"] = stats
        return cache["stats"]

    return load


def _imagenet_items(root: str | Path, split: str, limit: int) -> list[EvalItem]:
    from inputiba.data.datasets import ImageNetBoxFolder

    ds = ImageNetBoxFolder(root, split)
    out = []
    for i, (path, _wnid) in enumerate(ds.items[: limit or None]):
        s = ds[i]
        out.append(EvalItem(Path(path).stem, s.image, s.class_ids, ds.target(i), s.boxes))
    return out


def _targets_above(
    model: nn.Module, preprocess: Any, items: Sequence[EvalItem], out: Path, s: CompareSettings
) -> tuple[dict[str, int], list[str]]:
    """The targets of the images that reach the probability filter, and the names left out."""
    chosen = choose_targets(model, preprocess, items, out / "targets.json", s.device)
    min_p = s.evaluation.min_probability
    names = {it.name for it in items}
    targets = {k: v["target"] for k, v in chosen.items()
               if k in names and v["probability"] >= min_p}
    skipped = sorted(names - set(targets))
    if skipped and s.progress:
        print(f"inputiba compare: skipping {', '.join(skipped)} (target probability below "
              f"{min_p})", file=sys.stderr)
    if not targets:
        raise ConfigError(f"no image reaches min_probability {min_p}; lower it to compare")
    save_json(out / "targets_used.json", targets)
    return targets, skipped


def compare_methods(
    out: str | Path = "compare",
    *,
    items: Sequence[EvalItem] | None = None,
    imagenet: str | Path | None = None,
    split: str = "val",
    limit: int = 0,
    model: str | tuple[nn.Module, Callable[[Any], torch.Tensor]] = "efficientnet-lite0",
    weights: str | None = None,
    settings: CompareSettings | None = None,
) -> ComparisonResult:
    """Explain every image with each method, score the maps, and write the table and report.

    Args:
        out: output folder (layout in the module docstring).
        items: the images (:class:`EvalItem`); default every built-in photo, or the first
            ``limit`` of an ImageNet-style root ``imagenet`` (``images/<split>/<wnid>/``,
            ``annotations/<split>/<wnid>/*.xml``).
        model: a name for :func:`inputiba.models.load_model` (with ``weights``) or
            ``(model, preprocess)``.
        settings: :class:`CompareSettings`.

    Returns:
        :class:`ComparisonResult`.

    Raises:
        ConfigError: unknown method, no layer for InputIBA/IBA, or no image left to compare.

    Example:
        >>> res = compare_methods("cmp/", settings=CompareSettings(methods=["gradcam", "random"]))
        ... # doctest: +SKIP
        >>> print(res.table)                                            # doctest: +SKIP
    """
    from inputiba.models.image import default_layer

    s = settings or CompareSettings()
    known = available_explainers()
    methods = list(dict.fromkeys(m.replace("-", "_").lower() for m in s.methods))
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    model_name = model if isinstance(model, str) else type(model[0]).__name__
    net, preprocess = model if isinstance(model, tuple) else load_model(model, weights)
    # what the saved targets and maps belong to: a model object by its weights' digest (its
    # class name alone would let two weight sets of one architecture share a folder)
    model_id = {"model": model_name,
                "weights": weights if isinstance(model, str) else model_fingerprint(net)}
    net = net.to(s.device)
    layer = s.layer or (default_layer(model) if isinstance(model, str) else None)
    if layer is None and any(m in ("inputiba", "iba") for m in methods):
        raise ConfigError(f"no default bottleneck layer for {model_name!r}: give layer=")
    source = "items" if items is not None else (str(imagenet) if imagenet else "builtin")
    if items is None:
        items = _imagenet_items(imagenet, split, limit) if imagenet else builtin_items()[
            : limit or None]
    if not items:
        raise ConfigError("no images to compare on")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # targets.json (shared by every method) holds the classes this model chose
    _check_settings(out / "targets.settings.json", "targets", model_id)
    targets, skipped = _targets_above(net, preprocess, items, out, s)
    options: dict[str, dict[str, Any]] = {
        "inputiba": {**s.inputiba_options, "preset": s.preset, "seed": s.seed},
        "iba": {"seed": s.seed},
        "extremal_perturbation": {"steps": s.ep_steps},
        "integrated_gradients": {"n_steps": s.ig_steps},
        "deepshap": {"seed": s.seed},
        "random": {"seed": s.seed},
    }
    stats = _statistics_loader(net, preprocess, layer, out, s, model_name) if layer else None
    seconds: dict[str, float] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for method in methods:
        factory = build_explainer_factory(method, net, layer=layer,
                                          gradcam_layer=s.gradcam_layer, statistics=stats,
                                          options=options)
        depends = {**model_id, **options.get(method, {})}
        if method in ("inputiba", "iba"):
            depends.update(layer=layer, statistics=s.statistics)
        if method == "gradcam":
            depends["gradcam_layer"] = s.gradcam_layer
        timing = compute_maps(factory, method, net, preprocess, items, targets,
                              out / "maps" / method, batch_size=s.batch_size, device=s.device,
                              progress=s.progress, settings=depends)
        used = [timing[k] for k in targets if k in timing]
        if used:
            seconds[method] = float(np.mean(used))

        def announce(method: str = method) -> None:
            if s.progress:
                print(f"inputiba compare: evaluating {method}", file=sys.stderr)

        summaries[method] = evaluate_method(
            out / "maps" / method, out / "eval" / method, items, (net, preprocess), targets,
            s.evaluation, force=s.re_evaluate, announce=announce)
    table = comparison_table(summaries, seconds)
    report_settings = {
        "model": model_name, "layer": layer, "preset": s.preset,
        "inputiba_options": s.inputiba_options, "methods": methods,
        "images": sorted(targets), "skipped_low_probability": skipped,
        "evaluation": {k: v for k, v in vars(s.evaluation).items()
                       if k not in ("progress", "plots")},
        "extremal_perturbation_steps": s.ep_steps, "ig_steps": s.ig_steps, "seed": s.seed,
        "dataset": source,
    }
    changed = "".join(f", {k}={v}" for k, v in s.inputiba_options.items())
    header = (f"Model {model_name}, {len(targets)} images, bottleneck layer {layer}, InputIBA "
              f"preset {s.preset}{changed}. Mean ± std over images; best in bold.\n\n")
    save_text(out / "comparison.md", header + table)
    figure_grid(items, methods, out / "maps", out / "grid.png")
    write_report(out, table, methods, report_settings)
    return ComparisonResult(header + table, summaries, seconds, targets, out)


def build_explainer_factory(
    method: str, model: nn.Module, *, layer: str | None, gradcam_layer: str | None,
    statistics: Any, options: dict[str, Any],
) -> Any:
    """``() -> Explainer`` for ``method`` with the comparison's settings."""

    def factory() -> Explainer:
        kw = dict(options.get(method, {}))
        if method in ("inputiba", "iba"):
            return get_explainer(method, model, layer, statistics=statistics(), **kw)
        if method == "gradcam":
            return get_explainer(method, model, gradcam_layer, **kw)
        return get_explainer(method, model, **kw)

    return factory
