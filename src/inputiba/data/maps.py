"""Saved attribution maps and the images they explain: what an evaluation reads.

A maps folder holds ``<stem>.npy`` maps (float ``H x W`` at the image's original size, as
``inputiba explain`` writes them) and possibly the ``results.json`` of that run (targets). Each
map's image is found by stem in one source: in-memory :class:`EvalItem` objects, the built-in
photos, an ImageNet-style root with VOC boxes, or a folder of images with labelme ``.json`` /
VOC ``.xml`` boxes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inputiba.data.io import IMAGE_EXTENSIONS
from inputiba.errors import ConfigError, DataError, DataNotFoundError

__all__ = [
    "EvalItem",
    "builtin_items",
    "collect_items",
    "load_map",
    "map_files",
    "targets_from_results",
]


@dataclass
class EvalItem:
    """One image to score: its name (the map's stem), ``(H, W, 3)`` uint8 pixels, boxes
    ``(K, 4)`` ``x1, y1, x2, y2`` in pixels with the ImageNet classes each box stands for
    (``None``: every box counts), and the class to score (``None``: chosen as documented in
    :func:`evaluate_maps`)."""

    name: str
    image: np.ndarray
    class_ids: list[tuple[int, ...]] | None = None
    target: int | None = None
    boxes: np.ndarray | None = None



def map_files(maps_dir: str | Path) -> dict[str, Path]:
    """``stem -> path`` of the maps; ``<stem>.feature.npy`` / ``.gan.npy`` / ``.capacity.npy``
    (stage outputs of ``inputiba explain``) are not maps."""
    maps_dir = Path(maps_dir)
    if not maps_dir.is_dir():
        raise DataNotFoundError(f"maps folder {maps_dir} does not exist")
    out = {}
    for f in sorted(maps_dir.glob("*.npy")):
        stem = f.name[: -len(".npy")]
        if not stem.endswith((".feature", ".gan", ".capacity")):
            out[stem] = f
    if not out:
        raise DataNotFoundError(f"no <stem>.npy maps in {maps_dir}")
    return out


def load_map(path: Path) -> np.ndarray:
    try:
        m = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise DataError(f"{path}: not a readable .npy array ({exc.__class__.__name__})") from exc
    m = np.squeeze(np.asarray(m, dtype=np.float64))
    if m.ndim != 2:
        raise DataError(f"{path}: a map must be H x W, got shape {np.shape(m)}")
    if not np.isfinite(m).all():
        raise DataError(f"{path}: the map has NaN or infinite values")
    return m


def targets_from_results(maps_dir: Path) -> dict[str, int]:
    """Targets recorded by ``inputiba explain`` in ``results.json`` (when present)."""
    path = maps_dir / "results.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    records = data.get("images", data.get("results", [])) if isinstance(data, dict) else data
    out = {}
    for r in records if isinstance(records, list) else []:
        if not isinstance(r, dict):
            continue
        file = r.get("stem") or r.get("file") or r.get("image") or r.get("path")
        target = r.get("target", r.get("target_index"))
        if isinstance(target, dict):
            target = target.get("index")
        if file is not None and isinstance(target, int):
            out[Path(str(file)).stem if "stem" not in r else str(file)] = target
    return out


def _find_image(images_dir: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        for cand in (images_dir / f"{stem}{ext}", images_dir / f"{stem}{ext.upper()}"):
            if cand.exists():
                return cand
    return None


def _boxes_for(
    boxes_dir: Path | None, stem: str, wnid_to_idx: dict[str, int] | None
) -> tuple[np.ndarray | None, list[tuple[int, ...]] | None]:
    """``(boxes, class_ids or None)`` from ``<stem>.json`` (labelme) or ``<stem>.xml`` (VOC)."""
    from inputiba.data.datasets import LABEL_TO_IMAGENET, read_labelme, read_voc_xml

    if boxes_dir is None:
        return None, None
    if (boxes_dir / f"{stem}.json").exists():
        ann = read_labelme(boxes_dir / f"{stem}.json", masks=False)
        ids = [LABEL_TO_IMAGENET.get(lab) for lab in ann.labels]
    elif (boxes_dir / f"{stem}.xml").exists():
        ann = read_voc_xml(boxes_dir / f"{stem}.xml")
        ids = [
            ((wnid_to_idx[lab],) if wnid_to_idx and lab in wnid_to_idx else None)
            for lab in ann.labels
        ]
    else:
        return None, None
    if all(i is None for i in ids):
        return ann.boxes, None  # labels unknown: every box counts
    return ann.boxes, [tuple(i or ()) for i in ids]


def builtin_items() -> list[EvalItem]:
    """The built-in photos as :class:`EvalItem`: the localisation set (with boxes) first, then
    the photos without boxes."""
    from inputiba.data.assets import builtin_photos
    from inputiba.data.datasets import load_localization_set

    items = [EvalItem(s.name, s.image, s.class_ids, None, s.boxes) for s in load_localization_set()]
    taken = {it.name for it in items}
    items += [EvalItem(k, v) for k, v in builtin_photos().items() if k not in taken]
    return items


def collect_items(
    maps: Mapping[str, Path],
    *,
    items: Sequence[EvalItem] | None,
    images: str | Path | None,
    boxes: str | Path | None,
    class_index: str | Path | None,
    imagenet: str | Path | None,
    split: str,
    builtin: bool,
) -> tuple[list[EvalItem], list[dict[str, str]]]:
    """The items that have a map, and ``{"name", "reason"}`` for maps without an image."""
    from inputiba.data.datasets import ImageNetBoxFolder, load_image

    if builtin or items is not None:
        by_name = {it.name: it for it in (items if items is not None else builtin_items())}
        where = "the given items" if items is not None else "the built-in set"
        found = [by_name[s] for s in maps if s in by_name]
        missing = [{"name": s, "reason": f"not in {where}"} for s in maps if s not in by_name]
        return found, missing
    found, missing = [], []
    if imagenet:
        ds = ImageNetBoxFolder(imagenet, split)
        index = {p.stem: i for i, (p, _) in enumerate(ds.items)}
        for stem in maps:
            if stem not in index:
                missing.append({"name": stem, "reason": f"no image {stem} under {imagenet}"})
                continue
            s = ds[index[stem]]
            found.append(EvalItem(stem, s.image, s.class_ids, ds.target(index[stem]), s.boxes))
        return found, missing
    if not images:
        raise ConfigError("give the images: images=DIR, imagenet=ROOT, builtin=True or items")
    wnid_to_idx = None
    if class_index:
        index = json.loads(Path(class_index).read_text(encoding="utf-8"))
        wnid_to_idx = {v[0]: int(k) for k, v in index.items()}
    images_dir = Path(images)
    if not images_dir.is_dir():
        raise DataNotFoundError(f"images folder {images_dir} does not exist")
    boxes_dir = Path(boxes) if boxes else None
    if boxes_dir is not None and not boxes_dir.is_dir():
        raise DataNotFoundError(f"boxes folder {boxes_dir} does not exist")
    for stem in maps:
        path = _find_image(images_dir, stem)
        if path is None:
            missing.append({"name": stem, "reason": f"no image {stem}.* in {images_dir}"})
            continue
        bx, ids = _boxes_for(boxes_dir or images_dir, stem, wnid_to_idx)
        found.append(EvalItem(stem, load_image(path), ids, None, bx))
    return found, missing


