"""The evaluation workflow: score saved attribution maps with the metric classes.

:func:`evaluate_maps` reads a folder of ``<stem>.npy`` maps (float ``H x W`` at the image's
original size, as ``inputiba explain`` writes them), finds each map's image, boxes and target,
runs the chosen metrics and writes::

    OUT/per_image/<stem>.json   every metric of one image (+ target, probability, skips)
    OUT/summary.json            mean, std and count per metric; skipped images with reasons
    OUT/curves/<stem>.png       deletion and insertion curves (matplotlib, Agg)
    OUT/curves.png              the mean curves over all images

``inputiba evaluate`` is a thin command over this function; ``inputiba compare`` calls it once
per method.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inputiba.data.io import json_safe, save_json
from inputiba.data.maps import (
    EvalItem,
    collect_items,
    load_map,
    map_files,
    targets_from_results,
)
from inputiba.errors import ConfigError, DataError, TargetError
from inputiba.metrics import (
    Deletion,
    EffectiveHeatRatio,
    Insertion,
    MassInBox,
    Metric,
    PointingGame,
    SensitivityN,
)
from inputiba.models.image import load_model

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "EvalItem",
    "EvaluationSettings",
    "EvaluationResult",
    "evaluate_maps",
    "map_files",
]

ALL_METRICS = ("deletion", "insertion", "ehr", "pointing", "mass", "sensitivity")
#: Sensitivity-N is opt-in: about 4,200 forward passes per image at the default 100 subsets.
DEFAULT_METRICS = ("deletion", "insertion", "ehr", "pointing", "mass")


@dataclass
class EvaluationSettings:
    """How the maps are scored.

    Attributes:
        metrics: any of :data:`ALL_METRICS`.
        step: deletion/insertion step: a fraction of the pixels (< 1) or a number of pixels.
        blur_sigma: blur (pixels) of insertion's start image.
        min_probability: images whose target probability is lower are skipped (the paper: 0.6).
        ehr_max_box_fraction: EHR skips images whose boxes cover more (0: keep all).
        pointing_tolerance: pointing game tolerance in pixels.
        sensitivity_subsets: random subsets per N for sensitivity-N.
        batch_size: inputs per forward pass.
        device: where the model runs.
        plots: write the curve PNGs.
        progress: progress bar and the summary print.
    """

    metrics: Sequence[str] = DEFAULT_METRICS
    step: int | float = 0.01
    blur_sigma: float = 15.0
    min_probability: float = 0.6
    ehr_max_box_fraction: float = 0.33
    pointing_tolerance: float = 15.0
    sensitivity_subsets: int = 100
    batch_size: int = 64
    device: str = "cpu"
    plots: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        self.metrics = tuple(dict.fromkeys(self.metrics))
        bad = [m for m in self.metrics if m not in ALL_METRICS]
        if bad:
            raise ConfigError(f"unknown metrics {bad}; choose from {', '.join(ALL_METRICS)}")
        if self.step <= 0 or (self.step >= 1 and not float(self.step).is_integer()):
            raise ConfigError(
                f"step {self.step}: use a fraction in (0, 1) or a whole number of pixels"
            )
        if self.step >= 1:
            self.step = int(self.step)
        if not 0 <= self.min_probability <= 1:
            raise ConfigError(f"min_probability {self.min_probability} is not in [0, 1]")


@dataclass
class EvaluationResult:
    """What :func:`evaluate_maps` wrote: ``summary`` (as ``summary.json``), one record per image
    (as ``per_image/<stem>.json``) and the images that failed, with reasons."""

    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    out: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


# ----------------------------------------------------------------------------- inputs


# ----------------------------------------------------------------------------- scoring


def _plot_curves(
    path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from inputiba.data.io import atomic_write

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, (fr, sc, area) in curves.items():
        ax.plot(fr, sc, label=f"{label} (AUC {area:.3f})")
    ax.set_xlabel("fraction of pixels")
    ax.set_ylabel("target probability")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, dpi=100, format="png")
    plt.close(fig)


class _Scorer:
    """The metric objects of one evaluation and the per-image scoring (state: the metrics'
    running summaries and the curves for the mean plot)."""

    def __init__(self, model: nn.Module | None, s: EvaluationSettings) -> None:
        m, bar = s.metrics, s.progress and sys.stderr.isatty()
        self.settings = s
        self.deletion = (
            Deletion(model, step=s.step, batch_size=s.batch_size, progress=bar)
            if "deletion" in m
            else None
        )
        self.insertion = (
            Insertion(
                model, step=s.step, batch_size=s.batch_size, blur_sigma=s.blur_sigma, progress=bar
            )
            if "insertion" in m
            else None
        )
        self.sensitivity = (
            SensitivityN(model, n_subsets=s.sensitivity_subsets, batch_size=s.batch_size,
                         progress=bar)
            if "sensitivity" in m
            else None
        )
        ehr = (
            EffectiveHeatRatio(max_region_fraction=s.ehr_max_box_fraction or None)
            if "ehr" in m
            else None
        )
        pg = PointingGame(tolerance=s.pointing_tolerance) if "pointing" in m else None
        mib = MassInBox() if "mass" in m else None
        self.box_metrics: list[Metric] = [x for x in (ehr, pg, mib) if x is not None]
        self.mean_curves: dict[str, list[np.ndarray]] = {"deletion": [], "insertion": []}

    @property
    def curve_metrics(self) -> list[tuple[str, Metric]]:
        return [(k, v) for k, v in (("deletion", self.deletion), ("insertion", self.insertion))
                if v is not None]

    def boxes(self, record: dict[str, Any], item: EvalItem, amap: np.ndarray, target: int) -> None:
        """Box metrics at the image's resolution, for the boxes of the target's class."""
        if not self.box_metrics:
            return
        if item.boxes is None or len(item.boxes) == 0:
            region = None
        elif item.class_ids is None:
            region = item.boxes
        else:
            keep = [i for i, cls in enumerate(item.class_ids) if target in cls]
            region = item.boxes[keep] if keep else None
        if region is None:
            record["skipped"].append({"metric": "boxes", "reason": f"no boxes of class {target}"})
        for m in self.box_metrics:
            before = len(m.skipped)
            (row,) = m.update([amap], [region], names=[item.name])
            if row is not None:
                record.update({k: json_safe(v) for k, v in row.items()})
            elif len(m.skipped) > before and region is not None:
                record["skipped"].append(
                    {"metric": type(m).__name__, "reason": m.skipped[-1]["reason"]}
                )

    def perturbation(
        self, record: dict[str, Any], x: torch.Tensor, amap: np.ndarray, target: int
    ) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
        """Deletion, insertion and sensitivity-N at the model's input resolution."""
        small = F.interpolate(
            torch.as_tensor(amap, dtype=torch.float32)[None, None],
            size=x.shape[-2:],
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[0].to(x.device)
        curves = {}
        name = record["name"]
        for key, m in self.curve_metrics:
            res = m.update(x, [target], small, names=[name])
            fr, sc = res.fractions.cpu().numpy(), res.scores[0].cpu().numpy()
            record[f"{key}_auc"] = res.auc[0].item()
            record[f"{key}_curve"] = {"fractions": fr.round(6).tolist(),
                                      "scores": sc.round(6).tolist()}
            curves[key] = (fr, sc, res.auc[0].item())
            self.mean_curves[key].append(sc)
        if self.sensitivity is not None:
            r = self.sensitivity.update(x, [target], small, names=[name])
            record["sensitivity_n"] = json_safe(r.mean[0].item())
            record["sensitivity_n_per_n"] = {
                str(n): json_safe(float(c))
                for n, c in zip(r.ns, r.correlations[0].tolist(), strict=True)
            }
        return curves

    def summary(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(metrics, skipped)`` of the summary: mean/std/n per metric, skips per box metric."""
        metrics: dict[str, Any] = {}
        skipped: dict[str, Any] = {}
        for key, m in (("deletion_auc", self.deletion), ("insertion_auc", self.insertion),
                       ("sensitivity_n", self.sensitivity)):
            if m is not None:
                s = m.summary()
                metrics[key] = s[m.keys[0]]
                if "per_n" in s:
                    metrics["sensitivity_n_per_n"] = s["per_n"]
        for m in self.box_metrics:
            s = m.summary()
            metrics.update({k: s[k] for k in m.keys})
            skipped[type(m).__name__] = s["skipped"]
        return metrics, skipped

    def plot_means(self, path: Path) -> None:
        curves = {}
        for key, m in self.curve_metrics:
            if self.mean_curves[key]:
                sc = np.mean(np.stack(self.mean_curves[key]), 0)
                fr = m.curves[0][0]
                area = float(np.sum(np.diff(fr) * (sc[1:] + sc[:-1]) / 2))
                curves[f"mean {key}"] = (fr, sc, area)
        if curves:
            n = max(len(v) for v in self.mean_curves.values())
            _plot_curves(path, curves, f"mean over {n} images")


# ----------------------------------------------------------------------------- workflow


def _score_item(
    item: EvalItem,
    map_path: Path,
    target: int | None,
    scorer: _Scorer,
    model: nn.Module | None,
    preprocess: Callable[[Any], torch.Tensor] | None,
    out: Path | None,
) -> dict[str, Any]:
    """The record of one image; raises ``ValueError`` for a map that cannot be scored."""
    s = scorer.settings
    record: dict[str, Any] = {"name": item.name, "map": str(map_path), "skipped": []}
    amap = load_map(map_path)
    h, w = item.image.shape[:2]
    if amap.shape != (h, w):
        raise DataError(
            f"map {map_path.name} is {amap.shape[0]} x {amap.shape[1]} but its image is "
            f"{h} x {w}: maps must be at the image's original size (as inputiba explain writes them)"
        )
    if amap.min() < 0 or amap.max() > 1:
        # another method's raw scores: min-max scaling keeps the pixel order (deletion and
        # insertion unchanged) and puts EHR's thresholds on [0, 1]
        lo, hi = amap.min(), amap.max()
        amap = (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap)
        record["rescaled_from"] = [float(lo), float(hi)]
    x = probs = None
    if model is not None and preprocess is not None:
        x = preprocess(item.image).unsqueeze(0).to(s.device)
        with torch.no_grad():
            probs = torch.softmax(model(x).float(), 1)[0]
    if target is None:
        ids = sorted({c for cls in (item.class_ids or []) for c in cls})
        target = max(ids, key=lambda c: probs[c].item()) if ids else int(probs.argmax())
        record["target_source"] = "boxes" if ids else "prediction"
    target = int(target)
    record["target"] = target
    if probs is not None:
        if not 0 <= target < probs.numel():
            raise TargetError(
                f"target {target} is out of range for a model with {probs.numel()} classes"
            )
        record["probability"] = probs[target].item()
        if record["probability"] < s.min_probability:
            reason = f"target probability {record['probability']:.3f} < {s.min_probability}"
            record["skipped"].append({"metric": "all", "reason": reason})
            return record
    scorer.boxes(record, item, amap, target)
    if x is not None and (scorer.curve_metrics or scorer.sensitivity is not None):
        curves = scorer.perturbation(record, x, amap, target)
        if curves and s.plots and out is not None:
            _plot_curves(out / "curves" / f"{item.name}.png", curves,
                         f"{item.name}: class {target}")
    return record


def _known_targets(
    maps_dir: Path,
    files: Mapping[str, Path],
    target: int | None,
    targets: Mapping[str, int] | str | Path | None,
) -> dict[str, int]:
    """``stem -> class`` given by the caller or recorded by ``inputiba explain``."""
    if target is not None:
        return {stem: int(target) for stem in files}
    known = targets_from_results(maps_dir)
    if isinstance(targets, (str, Path)):
        targets = json.loads(Path(targets).read_text(encoding="utf-8"))
    known.update({str(k): int(v) for k, v in (targets or {}).items()})
    return known


def evaluate_maps(
    maps: str | Path,
    out: str | Path | None = "evaluation",
    *,
    items: Sequence[EvalItem] | None = None,
    images: str | Path | None = None,
    boxes: str | Path | None = None,
    class_index: str | Path | None = None,
    imagenet: str | Path | None = None,
    split: str = "val",
    builtin: bool = False,
    model: str | tuple[nn.Module, Callable[[Any], torch.Tensor]] = "efficientnet-lite0",
    weights: str | None = None,
    target: int | None = None,
    targets: Mapping[str, int] | str | Path | None = None,
    settings: EvaluationSettings | None = None,
) -> EvaluationResult:
    """Score a folder of saved maps.

    The images come from one source: ``items`` (in memory), ``builtin=True`` (the built-in
    photos), ``imagenet`` (an ImageNet-style root with VOC boxes) or ``images`` (a folder, with
    labelme ``.json`` / VOC ``.xml`` boxes beside them or in ``boxes``; ``class_index`` maps VOC
    WordNet ids to classes). The class scored per image: ``target`` for all, else ``targets``
    (a mapping or a JSON file ``{stem: class}``), else the ``results.json`` of
    ``inputiba explain`` in ``maps``, else the dataset's, else the box class the model rates
    highest, else the prediction.

    Args:
        maps: folder of ``<stem>.npy`` maps, ``(H, W)`` float at the image's original size
            (values outside ``[0, 1]`` are min-max scaled, recorded as ``rescaled_from``).
        out: output folder (``None``: write nothing).
        model: a model name for :func:`inputiba.models.load_model` or ``(model, preprocess)``;
            loaded only when a metric needs it.
        settings: :class:`EvaluationSettings` (default: its defaults).

    Returns:
        :class:`EvaluationResult`; per-image failures (unreadable map, wrong size, target out of
        range) are reported there and in ``summary["failed"]``, not raised.

    Example:
        >>> res = evaluate_maps("out/", "eval/", builtin=True)      # doctest: +SKIP
        >>> res.summary["metrics"]["insertion_auc"]["mean"]          # doctest: +SKIP
    """
    s = settings or EvaluationSettings()
    maps_dir = Path(maps)
    files = map_files(maps_dir)
    known = _known_targets(maps_dir, files, target, targets)
    found, failed = collect_items(files, items=items, images=images, boxes=boxes,
                             class_index=class_index, imagenet=imagenet, split=split,
                             builtin=builtin)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        (out_dir / "per_image").mkdir(parents=True, exist_ok=True)
        if s.plots:
            (out_dir / "curves").mkdir(exist_ok=True)
    need_model = any(m in s.metrics for m in ("deletion", "insertion", "sensitivity")) or (
        s.min_probability > 0
    ) or any(it.target is None and it.name not in known for it in found)
    net = preprocess = None
    if need_model:
        net, preprocess = model if isinstance(model, tuple) else load_model(model, weights)
        net = net.to(s.device)
    scorer = _Scorer(net, s)
    records, skipped_prob = [], []
    from tqdm.auto import tqdm

    live = s.progress and sys.stderr.isatty()  # no redraws in log files
    for it in tqdm(found, desc="evaluating", unit="image", disable=not live):
        try:
            record = _score_item(it, files[it.name], known.get(it.name, it.target), scorer,
                                 net, preprocess, out_dir)
        except (ValueError, FileNotFoundError) as exc:
            failed.append({"name": it.name, "reason": str(exc)})
            record = {"name": it.name, "map": str(files[it.name]), "error": str(exc)}
            print(f"inputiba evaluate: {it.name}: {exc}", file=sys.stderr)
        skipped_prob += [{"name": it.name, "reason": r["reason"]}
                         for r in record.get("skipped", []) if r["metric"] == "all"]
        records.append(record)
        if out_dir is not None:
            save_json(out_dir / "per_image" / f"{it.name}.json", record)
    metrics, skipped = scorer.summary()
    model_name = model if isinstance(model, str) else type(model[0]).__name__
    summary: dict[str, Any] = {
        "maps": str(maps_dir),
        "model": model_name,
        "settings": {k: v for k, v in asdict(s).items() if k not in ("plots", "progress")},
        "n_maps": len(files),
        "metrics": metrics,
        "skipped": {"probability": skipped_prob, **skipped},
        "failed": failed,
    }
    summary = json_safe(summary)
    if out_dir is not None:
        save_json(out_dir / "summary.json", summary)
        if s.plots:
            scorer.plot_means(out_dir / "curves.png")
    return EvaluationResult(summary, records, failed, out_dir)

