"""The comparison's table, figure grid and HTML report (``inputiba compare``'s pictures)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inputiba.data.io import atomic_write, save_text

if TYPE_CHECKING:
    from inputiba.data.maps import EvalItem

__all__ = ["METRICS", "SMALL_N", "comparison_table", "figure_grid", "write_report"]

#: (summary key, column title, higher is better)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("deletion_auc", "Deletion AUC (lower better)", False),
    ("insertion_auc", "Insertion AUC (higher better)", True),
    ("sensitivity_n", "Sensitivity-N (higher better)", True),
    ("ehr", "EHR (higher better)", True),
    ("mass_in_box", "Mass in box (higher better)", True),
    ("hit", "Pointing game (higher better)", True),
)

#: Below this many images a metric's mean and spread are flagged as unreliable.
SMALL_N = 10


def _fmt(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None or not stat.get("n"):
        return "n/a"
    std = stat.get("std")
    std_s = "" if std is None or (isinstance(std, float) and math.isnan(std)) else f" ± {std:.3f}"
    return f"{stat['mean']:.3f}{std_s}"



def comparison_table(
    summaries: dict[str, dict[str, Any]], seconds: dict[str, float] | None = None
) -> str:
    """Markdown table: one row per method, mean ± std per metric (best in bold), seconds per
    image; each column's title gives the number of images scored (``n``), and a cell scored on
    fewer images than its column says so. A note under the table flags columns with fewer than
    :data:`SMALL_N` images."""
    cols = [m for m in METRICS if any(m[0] in s.get("metrics", {}) for s in summaries.values())]
    best: dict[str, float] = {}
    col_n: dict[str, int] = {}
    for key, _title, higher in cols:
        stats = [s.get("metrics", {}).get(key) or {} for s in summaries.values()]
        vals = [st["mean"] for st in stats if st.get("mean") is not None]
        col_n[key] = max((int(st.get("n") or 0) for st in stats), default=0)
        if vals:
            best[key] = max(vals) if higher else min(vals)
    head = ["method", *[f"{title}, n={col_n[key]}" for key, title, _h in cols], "s / image"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for method, s in summaries.items():
        row = [method]
        for key, _title, _h in cols:
            stat = s.get("metrics", {}).get(key)
            cell = _fmt(stat)
            if stat and stat.get("mean") is not None and stat["mean"] == best.get(key):
                cell = f"**{cell}**"
            if stat and stat.get("n") is not None and stat["n"] < col_n[key]:
                cell += f" (n={stat['n']})"
            row.append(cell)
        sec = (seconds or {}).get(method)
        row.append("n/a" if sec is None else f"{sec:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    small = [title.split(" (")[0] for key, title, _h in cols if col_n[key] < SMALL_N]
    note = ""
    if small:
        note = (f"\nFewer than {SMALL_N} images for {', '.join(small)}: the means and spreads of "
                "these columns are not reliable; add images (for example `--imagenet ROOT`).\n")
    return "\n".join(lines) + "\n" + note


def figure_grid(
    items: Sequence[EvalItem], methods: Sequence[str], maps_root: Path, path: Path,
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
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, dpi=80, format="png")
    plt.close(fig)



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
    save_text(out / "report.html", "\n".join(parts))


