"""Compare attribution methods on one model and dataset with the evaluation suite.

For each method, every image gets a map (saved as float ``.npy`` at the image's original size,
the format ``inputiba evaluate`` reads), the maps are scored by :mod:`inputiba.cli.evaluate`,
and the summaries are gathered into a Markdown table and an HTML report with a figure grid::

    OUT/targets.json                 the class explained per image (shared by all methods)
    OUT/maps/<method>/<stem>.npy     (H, W) float32 maps in [0, 1]
    OUT/maps/<method>/timing.json    seconds per image
    OUT/eval/<method>/summary.json   the evaluation (plus per_image/, curves/)
    OUT/comparison.md                mean +- std per metric and method
    OUT/grid.png, OUT/report.html    images x methods, and the table

Resumable: a map that exists is never recomputed, and a method's evaluation is rerun only when
one of its maps is newer than its ``summary.json`` (or when asked to).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from inputiba.methods.image import Explainer, get_explainer, normalize_map

__all__ = [
    "CompareItem",
    "METRICS",
    "choose_targets",
    "compute_maps",
    "evaluate_method",
    "comparison_table",
    "figure_grid",
    "write_report",
    "build_explainer_factory",
]

#: (summary key, column title, higher is better)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("deletion_auc", "Deletion AUC (lower better)", False),
    ("insertion_auc", "Insertion AUC (higher better)", True),
    ("sensitivity_n", "Sensitivity-N (higher better)", True),
    ("ehr", "EHR (higher better)", True),
    ("mass_in_box", "Mass in box (higher better)", True),
    ("hit", "Pointing game (higher better)", True),
)


@dataclass
class CompareItem:
    """One image of the comparison: name (file stem), (H, W, 3) uint8 image, and the class."""

    name: str
    image: np.ndarray
    class_ids: list[tuple[int, ...]] | None = None
    target: int | None = None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


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
        _write_json(path, known)
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
) -> dict[str, float]:
    """Maps of ``method`` for the items that have none yet in ``out``; returns seconds/image.

    Args:
        explainer_factory: ``() -> Explainer`` (called only when something is missing).
        items: images to explain (only those with a target in ``targets``).
        out: the method's folder; each map is ``<stem>.npy``, (H, W) float32 in [0, 1] at the
            image's original size (bilinear from the model's input size, then divided by its
            maximum again, as the explainers' convention).

    Returns:
        ``{stem: seconds}`` for every map in ``out`` (also in ``out/timing.json``).
    """
    out.mkdir(parents=True, exist_ok=True)
    timing_path = out / "timing.json"
    timing: dict[str, float] = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    missing = [it for it in items if it.name in targets and not (out / f"{it.name}.npy").exists()]
    if not missing:
        return timing
    explainer: Explainer = explainer_factory()
    batches = [missing[i : i + batch_size] for i in range(0, len(missing), batch_size)]
    for batch in tqdm(batches, desc=method, unit="batch", disable=not progress):
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
            tmp = out / f"{it.name}.tmp.npy"
            np.save(tmp, full.numpy().astype(np.float32))
            tmp.replace(out / f"{it.name}.npy")
            timing[it.name] = seconds
        _write_json(timing_path, timing)
    return timing


def evaluate_method(
    maps_dir: Path, out: Path, dataset_args: Sequence[str], eval_args: Sequence[str],
    force: bool = False, announce: Any = None,
) -> dict[str, Any]:
    """Score a method's maps with ``inputiba evaluate`` (same parser, same defaults).

    Skipped when ``out/summary.json`` is newer than every map (unless ``force``); otherwise
    ``announce()`` (if given) is called first.
    """
    from inputiba.cli import evaluate as evaluate_cli

    summary = out / "summary.json"
    newest = max((p.stat().st_mtime for p in maps_dir.glob("*.npy")), default=0.0)
    if not force and summary.exists() and summary.stat().st_mtime >= newest:
        return json.loads(summary.read_text())
    if announce is not None:
        announce()
    parser = argparse.ArgumentParser(prog="inputiba")
    evaluate_cli.register(parser.add_subparsers())
    args = parser.parse_args(
        ["evaluate", str(maps_dir), "--out", str(out), *dataset_args, *eval_args]
    )
    args.func(args)
    return json.loads(summary.read_text())


def _fmt(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None or not stat.get("n"):
        return "n/a"
    std = stat.get("std")
    std_s = "" if std is None or (isinstance(std, float) and math.isnan(std)) else f" ± {std:.3f}"
    return f"{stat['mean']:.3f}{std_s}"


def comparison_table(
    summaries: dict[str, dict[str, Any]], seconds: dict[str, float] | None = None
) -> str:
    """Markdown table: one row per method, mean ± std per metric (best in bold; ``(n=k)`` where
    a metric scored fewer images than the row's most), images, and seconds per image."""
    cols = [m for m in METRICS if any(m[0] in s.get("metrics", {}) for s in summaries.values())]
    best: dict[str, float] = {}
    for key, _title, higher in cols:
        vals = [
            s["metrics"][key]["mean"] for s in summaries.values()
            if s.get("metrics", {}).get(key, {}).get("mean") is not None
        ]
        if vals:
            best[key] = max(vals) if higher else min(vals)
    head = ["method", *[title for _k, title, _h in cols], "images", "s / image"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for method, s in summaries.items():
        row = [method]
        n = max((v.get("n", 0) for v in s.get("metrics", {}).values() if isinstance(v, dict)),
                default=0)
        for key, _title, _h in cols:
            stat = s.get("metrics", {}).get(key)
            cell = _fmt(stat)
            if stat and stat.get("mean") is not None and stat["mean"] == best.get(key):
                cell = f"**{cell}**"
            if stat and stat.get("n") and stat["n"] < n:
                cell += f" (n={stat['n']})"  # e.g. EHR skips images with large boxes
            row.append(cell)
        row.append(str(n))
        sec = (seconds or {}).get(method)
        row.append("n/a" if sec is None else f"{sec:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def figure_grid(
    items: Sequence[CompareItem], methods: Sequence[str], maps_root: Path, path: Path,
    max_images: int = 8,
) -> None:
    """PNG grid: one row per image (the photo, then each method's map over it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [it for it in items if (maps_root / methods[0] / f"{it.name}.npy").exists()
            or any((maps_root / m / f"{it.name}.npy").exists() for m in methods)][:max_images]
    if not rows:
        return
    ncol = len(methods) + 1
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.2 * ncol, 2.2 * len(rows)),
                             squeeze=False)
    for r, it in enumerate(rows):
        axes[r, 0].imshow(it.image)
        axes[r, 0].set_ylabel(it.name, fontsize=7)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=8)
        for c, method in enumerate(methods, start=1):
            ax = axes[r, c]
            f = maps_root / method / f"{it.name}.npy"
            if f.exists():
                ax.imshow(it.image, alpha=0.35)
                ax.imshow(np.load(f), cmap="inferno", vmin=0, vmax=1, alpha=0.75)
            if r == 0:
                ax.set_title(method, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


def _md_to_html_table(md: str) -> str:
    lines = [ln for ln in md.strip().splitlines() if ln.startswith("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    head, body = rows[0], rows[2:]

    def cell(c: str, tag: str) -> str:
        bold = c.startswith("**") and c.endswith("**")
        text = escape(c.strip("*"))
        return f"<{tag}>{'<b>' + text + '</b>' if bold else text}</{tag}>"

    out = ["<table>", "<tr>" + "".join(cell(c, "th") for c in head) + "</tr>"]
    out += ["<tr>" + "".join(cell(c, "td") for c in r) + "</tr>" for r in body]
    out.append("</table>")
    return "\n".join(out)


def write_report(
    out: Path, table_md: str, methods: Sequence[str], settings: dict[str, Any]
) -> None:
    """``report.html``: settings, the table, the figure grid and each method's mean curves."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>inputiba compare</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style></head><body>",
        "<h1>Attribution methods compared</h1>",
        "<pre>" + escape(json.dumps(settings, indent=1)) + "</pre>",
        _md_to_html_table(table_md),
    ]
    if (out / "grid.png").exists():
        parts.append("<h2>Maps</h2><img src='grid.png' alt='images by methods'>")
    curves = [m for m in methods if (out / "eval" / m / "curves.png").exists()]
    if curves:
        parts.append("<h2>Mean deletion and insertion curves</h2>")
        parts += [
            f"<figure style='display:inline-block;width:32%'><img src='eval/{escape(m)}/curves.png'>"
            f"<figcaption>{escape(m)}</figcaption></figure>"
            for m in curves
        ]
    parts.append("</body></html>")
    (out / "report.html").write_text("\n".join(parts))


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
