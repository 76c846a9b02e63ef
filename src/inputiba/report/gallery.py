"""An offline HTML gallery of a run: ``<out>/index.html``, one row per image.

Each row shows the image, the stage-1 feature map (IBA capacity), the stage-2 GAN mask and the
final InputIBA map laid over the image, with the target class, its probability and the time
taken. Thumbnails are written once per image under ``<out>/thumbs/`` (so rows of earlier runs
into the same folder keep their pictures) and embedded into ``index.html`` as ``data:`` URIs:
the page is one self-contained file with inline CSS, no scripts and no network access.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from inputiba.data.io import atomic_write, save_text
from inputiba.report.visualize import blend, colorize, thumbnail

__all__ = ["THUMB_KINDS", "thumb_path", "write_thumbnails", "render_gallery", "write_gallery"]

#: The pictures of a row, in column order, with their column titles.
THUMB_KINDS: tuple[tuple[str, str], ...] = (
    ("image", "Image"),
    ("feature", "Stage 1: feature bottleneck (bits)"),
    ("gan", "Stage 2: GAN input mask (stage 3's prior)"),
    ("inputiba", "InputIBA attribution"),
)


def thumb_path(out_dir: str | os.PathLike[str], name: str, kind: str) -> Path:
    """Where the thumbnail ``kind`` (see :data:`THUMB_KINDS`) of image ``name`` lives."""
    return Path(out_dir) / "thumbs" / f"{name}.{kind}.jpg"


def write_thumbnails(
    out_dir: str | os.PathLike[str],
    name: str,
    image: np.ndarray,
    feature_map: np.ndarray | None,
    gan_mask: np.ndarray | None,
    attribution: np.ndarray,
    max_side: int = 256,
) -> None:
    """Write the four thumbnails of one image (JPEG, atomically).

    Args:
        out_dir: the run's output folder.
        name: the image's output stem.
        image: H x W x 3 ``uint8``.
        feature_map: H x W stage-1 capacity in bits (drawn from 0 to its maximum), or None.
        gan_mask: H x W in [0, 1] (drawn from its minimum to its maximum: the mask often
            stays close to a constant), or None.
        attribution: H x W in [0, 1].
        max_side: the thumbnails' longer side in pixels.
    """
    pictures = {
        "image": image,
        "feature": None if feature_map is None else colorize(feature_map, vmax=None),
        "gan": None if gan_mask is None else colorize(gan_mask, vmax=None, vmin=None),
        "inputiba": blend(image, attribution, alpha=0.55),
    }
    for kind, picture in pictures.items():
        if picture is None:
            continue
        with atomic_write(thumb_path(out_dir, name, kind), "wb") as fh:
            fh.write(thumbnail(picture, max_side=max_side, format="JPEG"))


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em;
       color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 6px 10px; vertical-align: middle;
         text-align: center; }
th { background: #eee; font-weight: 600; position: sticky; top: 0; }
td.info { text-align: left; min-width: 14em; }
td img { max-width: 256px; max-height: 256px; display: block; margin: auto; }
tr.failed td { background: #fdecea; }
.err { color: #a00; font-family: monospace; white-space: pre-wrap; text-align: left; }
.name { font-weight: 600; word-break: break-all; }
.small { color: #666; font-size: 0.85em; }
"""


def _data_uri(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _fmt(value: Any, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def _row(out_dir: Path, rec: Mapping[str, Any]) -> str:
    esc = html.escape
    name = str(rec.get("name", "?"))
    file = str(rec.get("file") or name)
    if rec.get("status") != "ok":
        return (
            f'<tr class="failed"><td class="info"><div class="name">{esc(file)}</div>'
            f'<div class="small">failed</div></td>'
            f'<td colspan="{len(THUMB_KINDS)}" class="err">{esc(str(rec.get("error")))}</td></tr>'
        )
    target = rec.get("target") or {}
    seconds = rec.get("seconds") or {}
    total = sum(v for v in seconds.values() if isinstance(v, (int, float)))
    feature_max = rec.get("feature_max_bits")
    info = (
        f'<div class="name">{esc(file)}</div>'
        f'<div>class {esc(str(target.get("index")))}: {esc(str(target.get("name")))}</div>'
        f'<div>p = {_fmt(rec.get("probability"))}</div>'
        f'<div class="small">{esc(str(rec.get("method", "")))}, {_fmt(total, ".1f")} s</div>'
    )
    if isinstance(feature_max, (int, float)):
        info += f'<div class="small">stage-1 max {feature_max:.2f} bits</div>'
    gan_range = rec.get("gan_range")
    untrained = rec.get("gan_trained") is False
    if isinstance(gan_range, (list, tuple)) and len(gan_range) == 2:
        what = "prior mask" if untrained else "GAN mask"
        info += (f'<div class="small">{what} {_fmt(gan_range[0], ".2f")} to '
                 f'{_fmt(gan_range[1], ".2f")}</div>')
    if untrained:
        info += ('<div class="small">no GAN (stage 2 skipped): the mask column is the GAN\'s '
                 "initial mask (from the stage-1 map), stage 3's prior</div>")
    cells = [f'<td class="info">{info}</td>']
    for kind, title in THUMB_KINDS:
        uri = _data_uri(thumb_path(out_dir, name, kind))
        if uri is None:
            cells.append("<td>-</td>")
            continue
        img = f'<img src="{uri}" alt="{esc(title)} of {esc(name)}">'
        if kind == "inputiba" and (rec.get("outputs") or {}).get("overlay"):
            href = esc(quote(str(rec["outputs"]["overlay"])))  # spaces, '#', '%' in names
            img = f'<a href="{href}">{img}</a>'
        cells.append(f"<td>{img}</td>")
    return "<tr>" + "".join(cells) + "</tr>"


def render_gallery(
    out_dir: str | os.PathLike[str],
    records: Sequence[Mapping[str, Any]],
    title: str = "InputIBA explanations",
    subtitle: str | None = None,
) -> str:
    """The gallery's HTML text for ``records`` (as in ``results.json``) of ``out_dir``."""
    out = Path(out_dir)
    ok = sum(1 for r in records if r.get("status") == "ok")
    meta = f"{ok} of {len(records)} images explained"
    if subtitle:
        meta += " &middot; " + html.escape(subtitle)
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in THUMB_KINDS)
    rows = "\n".join(_row(out, r) for r in records)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p class=\"meta\">{meta}. Click a map for the full "
        "overlay; the maps are in the <code>.npy</code> files beside this page.</p>\n"
        f"<table>\n<tr><th>File</th>{head}</tr>\n{rows}\n</table>\n</body></html>\n"
    )


def write_gallery(
    out_dir: str | os.PathLike[str],
    records: Sequence[Mapping[str, Any]],
    title: str = "InputIBA explanations",
    subtitle: str | None = None,
) -> Path:
    """Write ``<out_dir>/index.html`` atomically and return its path."""
    path = Path(out_dir) / "index.html"
    save_text(path, render_gallery(out_dir, records, title, subtitle))
    return path
