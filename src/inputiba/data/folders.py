"""Image folders as datasets: listing a folder or an ImageNet-style tree (:func:`list_dataset`),
subsets, and splitting a folder into train/validation/test (:func:`split_dataset`)."""


from __future__ import annotations

import filecmp
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inputiba.data.datasets import ImageNetBoxFolder
from inputiba.errors import ConfigError, DataError, DataNotFoundError

__all__ = ["DatasetItem", "list_dataset", "read_subset", "split_dataset"]


@dataclass
class DatasetItem:
    """One image of a dataset-scale run.

    Attributes:
        index: position in the full, sorted listing of the dataset (before any subset); the
            item's random seed is ``seed + index``, so its map does not depend on the subset,
            the sharding or the batch it ran in.
        key: the item's path relative to the image folder, POSIX style (``"n01440764/x.JPEG"``);
            unique, and what failure files and subset files name.
        path: the image file.
        label: the class index from the item's folder (ImageNet layout), else ``None``.
        group: the class folder (WordNet id or sub-folder name), ``""`` at the top level.
    """

    index: int
    key: str
    path: Path
    label: int | None = None
    group: str = ""


def _image_files(folder: Path) -> list[Path]:
    from inputiba.data.io import IMAGE_EXTENSIONS

    return sorted(
        (f for f in folder.rglob("*")
         if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")),
        key=lambda f: f.relative_to(folder).as_posix(),
    )


def _imagenet_root(root: Path, split: str, class_index: str | Path | None) -> bool:
    index = Path(class_index) if class_index else root / "imagenet_class_index.json"
    return index.is_file() and (root / "images" / split).is_dir()


def list_dataset(
    root: str | os.PathLike[str],
    split: str = "val",
    subset: str | os.PathLike[str] | Sequence[int | str] | None = None,
    class_index: str | os.PathLike[str] | None = None,
) -> list[DatasetItem]:
    """The images of a dataset, in a fixed order (sorted by relative path).

    Two layouts are recognised:

    * ImageNet (the original InputIBA layout, see :class:`ImageNetBoxFolder`): ``root`` holds
      ``imagenet_class_index.json`` (or ``class_index`` is given) and ``images/<split>/<wnid>/``;
      each item's ``label`` is its folder's class index.
    * a plain folder: every image file below ``root`` (any depth); ``label`` is ``None`` and
      ``group`` the first sub-folder, if any.

    Args:
        root: the dataset folder.
        split: the split sub-folder of an ImageNet layout.
        subset: keep only these items: a file (one index or name per line, ``#`` comments; or a
            JSON list) or a sequence. An int is a position in the full listing; a name is an
            item's key (``"n01440764/x.JPEG"``), file name (``"x.JPEG"``) or stem (``"x"``).
            Items keep the order of the full listing.
        class_index: the JSON class index of an ImageNet layout (default
            ``root/imagenet_class_index.json``).

    Returns:
        The items (their ``index`` is the position in the full listing).

    Raises:
        DataNotFoundError: ``root`` or the subset file is missing (a FileNotFoundError).
        DataError: no images, a subset entry that matches nothing or several items, an index
            out of range, or an ImageNet class folder that is not in the class index.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataNotFoundError(f"Dataset folder {base} does not exist")
    items: list[DatasetItem] = []
    if _imagenet_root(base, split, class_index):
        folder = ImageNetBoxFolder(base, split, class_index)
        image_dir = base / "images" / split
        for i, (path, wnid) in enumerate(folder.items):
            items.append(DatasetItem(i, path.relative_to(image_dir).as_posix(), path,
                                     folder.target(i), wnid))
    else:
        for i, path in enumerate(_image_files(base)):
            rel = path.relative_to(base)
            items.append(DatasetItem(i, rel.as_posix(), path, None,
                                     rel.parts[0] if len(rel.parts) > 1 else ""))
    if not items:
        raise DataError(f"Dataset folder {base} contains no images")
    if subset is not None:
        items = _apply_subset(items, read_subset(subset) if isinstance(subset, (str, os.PathLike))
                              else list(subset))
    return items


def read_subset(path: str | os.PathLike[str]) -> list[int | str]:
    """A subset file's entries: a JSON list, or one index or name per line (``#`` comments).

    Raises:
        DataNotFoundError: the file is missing (a FileNotFoundError).
    """
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"Subset file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        data = json.loads(text)
        return [int(v) if isinstance(v, int) else str(v) for v in data]
    out: list[int | str] = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append(int(entry) if entry.lstrip("-").isdigit() else entry)
    return out


def _apply_subset(items: list[DatasetItem], entries: Sequence[int | str]) -> list[DatasetItem]:
    by_name: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        for name in {it.key, it.path.name, it.path.stem}:
            by_name.setdefault(name, []).append(i)
    keep: set[int] = set()
    for e in entries:
        if isinstance(e, int):
            if not 0 <= e < len(items):
                raise DataError(f"Subset index {e} is out of range: the dataset has "
                                 f"{len(items)} images (0-{len(items) - 1})")
            keep.add(e)
            continue
        hits = by_name.get(e.replace("\\", "/"), [])
        if not hits:
            raise DataError(f"Subset entry {e!r} matches no image of the dataset")
        if len(hits) > 1:
            names = ", ".join(items[h].key for h in hits[:3])
            raise DataError(f"Subset entry {e!r} is ambiguous ({names}); give the full key")
        keep.add(hits[0])
    return [items[i] for i in sorted(keep)]


def split_dataset(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    n_estimation: int,
    n_attribution: int,
    seed: int = 0,
    split: str = "val",
    layout: str = "class",
    mode: str = "copy",
    class_index: str | os.PathLike[str] | None = None,
) -> dict[str, list[str]]:
    """Split a dataset into an estimation set and an attribution set, N images per class.

    The original code's ``generate_small_imagenet``: per class (ImageNet folder, else the
    sub-folder; a flat folder is one class), the images are shuffled with ``seed`` and the first
    ``n_estimation`` go to ``out_dir/estimation``, the next ``n_attribution`` to
    ``out_dir/attribution``; a class with fewer images fills the estimation set first. The two
    sets never share an image. ``out_dir/split.json`` lists both sets' keys.

    Args:
        root: the dataset (see :func:`list_dataset`).
        out_dir: where the two sets go.
        n_estimation: images per class in the estimation set (>= 0).
        n_attribution: images per class in the attribution set (>= 0).
        seed: the shuffle's seed (the same seed gives the same split).
        split: the split sub-folder of an ImageNet layout.
        layout: ``"class"``: one folder per class (for an ImageNet source, each set is itself an
            ImageNet folder: ``images/<split>/<wnid>/``, its ``annotations`` when present and
            the class index, so it can be explained and evaluated as one); ``"flat"``: all
            images of a set in one folder (names made unique with the class prefix on clashes).
        mode: ``"copy"``, ``"symlink"``, ``"hardlink"`` or ``"list"`` (only ``split.json``).
        class_index: as in :func:`list_dataset`.

    Returns:
        dict[str, list[str]]: the keys of each set, ``"estimation"`` and ``"attribution"``.

    Raises:
        ConfigError: bad counts, layout or mode. DataError: a file already in the way (both
            ValueErrors).
    """
    if n_estimation < 0 or n_attribution < 0:
        raise ConfigError(f"Image counts must be >= 0, got {n_estimation} and {n_attribution}")
    if layout not in ("class", "flat"):
        raise ConfigError(f"layout must be 'class' or 'flat', not {layout!r}")
    if mode not in ("copy", "symlink", "hardlink", "list"):
        raise ConfigError(f"mode must be copy, symlink, hardlink or list, not {mode!r}")
    base = Path(root).expanduser()
    imagenet = _imagenet_root(base, split, class_index)
    items = list_dataset(base, split, class_index=class_index)
    groups: dict[str, list[DatasetItem]] = {}
    for it in items:
        groups.setdefault(it.group, []).append(it)
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[DatasetItem]] = {"estimation": [], "attribution": []}
    for name in sorted(groups):
        members = groups[name]
        order = rng.permutation(len(members))
        picked = [members[k] for k in order]
        chosen["estimation"] += picked[:n_estimation]
        chosen["attribution"] += picked[n_estimation:n_estimation + n_attribution]
    out = Path(out_dir)
    result: dict[str, list[str]] = {}
    for set_name, members in chosen.items():
        members.sort(key=lambda it: it.index)
        result[set_name] = [it.key for it in members]
        if mode == "list":
            continue
        dest_root = out / set_name
        if imagenet and layout == "class":
            src_index = Path(class_index) if class_index else base / "imagenet_class_index.json"
            dest_root.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src_index, dest_root / "imagenet_class_index.json")
            image_dest = dest_root / "images" / split
        else:
            image_dest = dest_root
        used: set[str] = set()
        for it in members:
            if layout == "class":
                rel = Path(it.key) if not imagenet else Path(it.group) / it.path.name
            else:
                name = it.path.name
                if name.lower() in used:
                    name = f"{it.group}_{name}" if it.group else name
                used.add(name.lower())
                rel = Path(name)
            _place(it.path, image_dest / rel, mode)
            if imagenet and layout == "class":
                xml = base / "annotations" / split / it.group / (it.path.stem + ".xml")
                if xml.is_file():
                    _place(xml, dest_root / "annotations" / split / it.group / xml.name, mode)
    from inputiba.data.io import save_json

    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "split.json", {"source": str(base), "seed": seed, "split": split,
                                   "n_estimation": n_estimation,
                                   "n_attribution": n_attribution, **result})
    return result


def _place(src: Path, dest: Path, mode: str) -> None:
    if dest.exists() or dest.is_symlink():
        if dest.is_file() and (os.path.samefile(src, dest) or filecmp.cmp(src, dest, False)):
            return  # a rerun of the same split
        raise DataError(f"{dest} already exists and differs from {src}; choose an empty "
                         "output folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        shutil.copy2(src, dest)
    elif mode == "symlink":
        dest.symlink_to(src.resolve())
    else:
        os.link(src, dest)
