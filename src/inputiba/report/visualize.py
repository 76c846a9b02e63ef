"""Pictures of attribution maps: colour-mapped maps and the image with its map overlaid.

Uses matplotlib's object-oriented API with the Agg canvas only (no pyplot, no display, safe in
threads and on headless machines).
"""

from __future__ import annotations

import io as _io
import os
from typing import Any

import numpy as np

from inputiba.data.io import as_rgb_array, atomic_write
from inputiba.errors import InputError

__all__ = ["colorize", "blend", "overlay_figure", "save_overlay", "thumbnail"]


def _normalise(values: np.ndarray, vmax: float | None = None, vmin: float | None = 0.0
               ) -> np.ndarray:
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(v.max()) if vmax is None else float(vmax)
    low = float(v.min()) if vmin is None else float(vmin)
    return np.clip((v - low) / (top - low), 0.0, 1.0) if top > low else np.zeros_like(v)


def colorize(values: np.ndarray, cmap: str = "jet", vmax: float | None = 1.0,
             vmin: float | None = 0.0) -> np.ndarray:
    """Colour-map a 2-D map.

    Args:
        values: H x W (or 1 x H x W) map.
        cmap: a matplotlib colour map name.
        vmax: the value drawn with the top colour (``None``: the map's maximum).
        vmin: the value drawn with the bottom colour (``None``: the map's minimum).

    Returns:
        H x W x 3 ``uint8``.
    """
    from matplotlib import colormaps

    v = _normalise(np.squeeze(values), vmax, vmin)
    return (colormaps[cmap](v)[..., :3] * 255).round().astype(np.uint8)


def blend(image: np.ndarray, values: np.ndarray, alpha: float = 0.5, cmap: str = "jet",
          vmax: float | None = 1.0) -> np.ndarray:
    """The image with the colour-mapped map laid over it (same size), H x W x 3 ``uint8``."""
    img = as_rgb_array(image).astype(np.float64)
    heat = colorize(values, cmap, vmax).astype(np.float64)
    if heat.shape[:2] != img.shape[:2]:
        raise InputError(f"map {heat.shape[:2]} and image {img.shape[:2]} differ in size")
    return ((1 - alpha) * img + alpha * heat).round().astype(np.uint8)


def overlay_figure(
    image: np.ndarray,
    attribution: np.ndarray,
    title: str | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    label: str = "attribution",
    max_inches: float = 7.0,
    dpi: int = 100,
) -> Any:
    """A figure: the image with the map overlaid, a colour bar, and a title.

    Args:
        image: H x W x 3 image.
        attribution: H x W map in [0, 1] (same size as the image).
        title: e.g. ``"tabby, tabby cat (p = 0.83)"``.
        cmap: colour map.
        alpha: opacity of the map.
        label: the colour bar's label.
        max_inches: the figure's longer side.
        dpi: resolution when saved.

    Returns:
        A :class:`matplotlib.figure.Figure` (Agg canvas).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = as_rgb_array(image)
    h, w = img.shape[:2]
    scale = max_inches / max(h, w)
    iw, ih = w * scale, h * scale  # the image's size in inches
    pad, bar_w, bar_room, title_h = 0.1, 0.22, 1.0, 0.45
    fw, fh = pad + iw + 0.2 + bar_w + bar_room, pad + ih + title_h
    fig = Figure(figsize=(fw, fh), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((pad / fw, pad / fh, iw / fw, ih / fh))
    ax.imshow(img, interpolation="antialiased")
    im = ax.imshow(_normalise(np.squeeze(attribution), 1.0), cmap=cmap, alpha=alpha,
                   vmin=0.0, vmax=1.0, interpolation="antialiased")
    ax.set_axis_off()
    cax = fig.add_axes(((pad + iw + 0.2) / fw, (pad + 0.1 * ih) / fh, bar_w / fw, 0.8 * ih / fh))
    bar = fig.colorbar(im, cax=cax)
    bar.solids.set_alpha(1.0)
    bar.set_label(label)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.1 / fh, va="top")
    return fig


def save_overlay(
    path: str | os.PathLike[str],
    image: np.ndarray,
    attribution: np.ndarray,
    class_name: str | None = None,
    probability: float | None = None,
    method: str = "InputIBA",
    **kwargs: Any,
) -> None:
    """Save the overlay figure as a PNG, atomically.

    The title reads ``"<method>: <class_name> (p = 0.83)"``; the rest as in
    :func:`overlay_figure`.
    """
    title = method
    if class_name is not None:
        title += f": {class_name}"
    if probability is not None:
        title += f" (p = {probability:.3f})"
    fig = overlay_figure(image, attribution, title=title, **kwargs)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())


def thumbnail(image: np.ndarray, max_side: int = 256, format: str = "PNG") -> bytes:
    """An image file (PNG or JPEG bytes) of ``image`` scaled down to ``max_side`` pixels."""
    from PIL import Image

    pil = Image.fromarray(as_rgb_array(image))
    pil.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = _io.BytesIO()
    pil.save(buf, format=format, **({"quality": 85} if format.upper() == "JPEG" else {}))
    return buf.getvalue()
