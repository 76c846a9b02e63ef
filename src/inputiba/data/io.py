"""Reading images robustly and writing result files atomically.

Reading: :func:`read_image` turns any jpg/png/bmp/tiff/webp (grey, grey+alpha, RGBA, palette,
CMYK, 16-bit, float) into an H x W x 3 ``uint8`` RGB array, with the EXIF orientation applied,
and raises :class:`ImageReadError` with a one-line message naming the file when it cannot.
:func:`collect_images` expands files and folders into a list of :class:`ImageSource`, keeping
missing paths and empty folders as failed entries so that a run can report them and go on.

Writing: every result file goes through :func:`atomic_write` (a temporary file in the same
folder, flushed, then :func:`os.replace` onto the target), so a file either has its old content
or its complete new content, never half of it, even if the process dies mid-write.
:func:`file_group` extends this to the several files of one image: all or none.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from inputiba.errors import ImageReadError, InputError, OutputDirError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "ImageSource",
    "read_image",
    "read_image_bounded",
    "bound_image",
    "as_rgb_array",
    "collect_images",
    "output_stem",
    "check_output_dir",
    "atomic_write",
    "file_group",
    "save_npy",
    "save_json",
    "save_text",
    "save_image",
    "json_safe",
]

#: File name endings read as images when a folder is expanded (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class ImageSource:
    """One input of a run: a file (``path``), an in-memory array (``array``), or a failure.

    Attributes:
        name: the stem used for output files (unique within a run).
        path: the file, or ``None`` for arrays.
        array: an H x W x 3 ``uint8`` image, or ``None`` for files (read lazily).
        error: why this input cannot be used (missing path, empty folder), or ``None``.
    """

    name: str
    path: Path | None = None
    array: np.ndarray | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        """How to refer to this input in messages and in ``results.json``."""
        return str(self.path) if self.path is not None else self.name

    def load(self) -> np.ndarray:
        """The image as H x W x 3 ``uint8`` RGB. Raises :class:`ImageReadError`."""
        return self.load_bounded(None)[0]

    def load_bounded(self, max_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
        """(the image with its longer side at most ``max_side``, (H, W) its full size); see
        :func:`read_image_bounded`. Raises :class:`ImageReadError`."""
        if self.error is not None:
            raise ImageReadError(self.error)
        if self.array is not None:
            h, w = self.array.shape[:2]
            return bound_image(self.array, max_side), (int(h), int(w))
        assert self.path is not None
        return read_image_bounded(self.path, max_side)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB, respecting its EXIF orientation.

    Grey, grey + alpha, palette, RGBA, CMYK, 16-bit and float images are converted to 8-bit RGB;
    transparent pixels are composited onto white. Multi-frame files (TIFF stacks, animated
    WebP) give their first frame.

    Args:
        path: the image file.

    Returns:
        np.ndarray: an H x W x 3 ``uint8`` array, H x W the displayed size after EXIF rotation.

    Raises:
        ImageReadError: the file is missing, a folder, not an image, or corrupt/truncated.
    """
    return read_image_bounded(path, None)[0]


def read_image_bounded(path: str | os.PathLike[str],
                       max_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`read_image`, scaled down (aspect kept) so that its longer side is at most
    ``max_side`` pixels; JPEGs are decoded at a reduced scale then, so a huge photo never
    occupies memory at full size.

    Returns:
        (H' x W' x 3 ``uint8`` image, (H, W) its full displayed size).

    Raises:
        ImageReadError: as :func:`read_image`.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: no such file")
    if p.is_dir():
        raise ImageReadError(f"{p}: is a folder, not an image file")
    try:
        with Image.open(p) as img:
            w, h = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # displayed turned a quarter
                w, h = h, w
            if max_side is not None and max(w, h) > max_side:
                scale = max_side / max(w, h)
                img.draft(None, (max(1, round(img.size[0] * scale)),
                                 max(1, round(img.size[1] * scale))))  # JPEG: 1/2 .. 1/8
            img.load()
            img = ImageOps.exif_transpose(img)
            return bound_image(_pil_to_rgb(img), max_side), (h, w)
    except UnidentifiedImageError:
        raise ImageReadError(
            f"{p}: not a readable image (supported: {', '.join(IMAGE_EXTENSIONS)})"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{p}: corrupt or truncated image ({_one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise anything on broken files
        raise ImageReadError(
            f"{p}: cannot decode image ({type(exc).__name__}: {_one_line(exc)})"
        ) from None


def bound_image(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """``image`` (H x W x 3 ``uint8``) scaled down with a Lanczos filter so that its longer
    side is at most ``max_side`` pixels (aspect kept); unchanged when it already fits or
    ``max_side`` is ``None``."""
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image
    from PIL import Image

    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _pil_to_rgb(img: Any) -> np.ndarray:
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 65535.0
        else:
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return as_rgb_array(arr)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def as_rgb_array(image: Any) -> np.ndarray:
    """Convert an in-memory image to H x W x 3 ``uint8`` RGB.

    Args:
        image: a PIL image, or an array H x W (grey), H x W x 1, H x W x 3 or H x W x 4 (alpha
            dropped), of integers 0-255 or floats in [0, 1].

    Raises:
        ValueError: the array does not have one of those shapes.
    """
    if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
        return _pil_to_rgb(image)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # C x H x W
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
        raise InputError(
            f"An image array must be H x W, H x W x 1, H x W x 3 or H x W x 4; got shape "
            f"{tuple(np.shape(image))}"
        )
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool:
        arr = np.nan_to_num(arr.astype(np.float64)) * 255.0
    return np.ascontiguousarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def _is_image_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def collect_images(
    inputs: Iterable[Any], recursive: bool = False
) -> list[ImageSource]:
    """Expand files, folders and arrays into the inputs of a run.

    Folders contribute their image files (by extension, sorted by name). A missing path or a
    folder without images becomes an entry with ``error`` set, so that a run can report it and
    still explain the rest. Output names are the file stems, made unique with ``-2``, ``-3`` ...
    when two inputs share a stem; arrays are named ``image-0``, ``image-1``, ...

    Args:
        inputs: paths (str or Path) and/or images (numpy arrays, PIL images). A ``(name, array)``
            pair names an array.
        recursive: also look into sub-folders.

    Returns:
        One :class:`ImageSource` per image (or per failed path), in input order.
    """
    sources: list[ImageSource] = []
    for i, item in enumerate(inputs):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            sources.append(ImageSource(name=item[0], array=as_rgb_array(item[1])))
        elif isinstance(item, (str, os.PathLike)):
            p = Path(item).expanduser()
            if not p.exists():
                sources.append(ImageSource(name=p.stem or str(p), path=p,
                                           error=f"{p}: no such file or folder"))
            elif p.is_dir():
                files = sorted(
                    f for f in (p.rglob("*") if recursive else p.iterdir()) if _is_image_file(f)
                )
                if not files:
                    sources.append(ImageSource(
                        name=p.name or str(p), path=p,
                        error=f"{p}: folder contains no images ({', '.join(IMAGE_EXTENSIONS)})",
                    ))
                sources.extend(ImageSource(name=f.stem, path=f) for f in files)
            else:
                sources.append(ImageSource(name=p.stem, path=p))
        else:
            try:
                arr = as_rgb_array(item)
            except ValueError as exc:
                sources.append(ImageSource(name=f"image-{i}", error=f"input {i}: {exc}"))
                continue
            sources.append(ImageSource(name=f"image-{i}", array=arr))
    _make_unique(sources)
    return sources


def output_stem(name: str) -> str:
    """``name`` as a file stem: unchanged (Unicode, spaces and punctuation kept) except this
    system's path separators and NUL, which become ``_``; an empty or blank name and
    ``.``/``..`` become ``image``."""
    bad = {"\0", os.sep, *(os.altsep or "")}
    stem = "".join("_" if c in bad else c for c in name)
    return "image" if stem.strip() in ("", ".", "..") else stem


def _make_unique(sources: Sequence[ImageSource]) -> None:
    """Output names: the stems themselves; ``-2``, ``-3`` ... only for real collisions (two
    inputs with the same stem, compared case-insensitively as on macOS and Windows)."""
    used: set[str] = set()
    for s in sources:
        base = output_stem(s.name)
        name, k = base, 2
        while name.casefold() in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name.casefold())
        s.name = name


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Make sure ``path`` can be the output folder of a run, before any work is done.

    The folder is not created; a temporary file is created and removed in it (or in its
    nearest existing parent) to prove that writing works.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputDirError: the path is a file, lies under a file, or cannot be written (the
            message names the path and why).
    """
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"Output folder {out} is a file; choose a folder (--out DIR)")
    probe_dir = out
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputDirError(f"Output folder {out} cannot be created: {probe_dir} is a file")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".inputiba-write-test.", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        what = "cannot be written" if probe_dir == out else f"cannot be created in {probe_dir}"
        raise OutputDirError(f"Output folder {out} {what}: {exc.strerror or _one_line(exc)}") \
            from None
    return out


#: The files of the open :func:`file_group` (temporary file, target), or ``None``.
_GROUP: contextvars.ContextVar[list[tuple[str, Path]] | None] = contextvars.ContextVar(
    "inputiba_file_group", default=None)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one step.

    On an exception the temporary file is removed and ``path`` keeps its previous content.

    Args:
        path: the final file.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        kwargs = {"encoding": "utf-8", "newline": "\n"} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        pending = _GROUP.get()
        if pending is not None:  # inside file_group(): renamed when the whole group is done
            pending.append((tmp, target))
        else:
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_group() -> Iterator[None]:
    """Write several files as a group: every :func:`atomic_write` inside the block writes its
    temporary file, and the files are renamed into place only when the block completes.

    On an exception every temporary file of the group is removed and no target changes, so a
    failure leaves no partial set of outputs (and earlier outputs of the same names intact).
    """
    pending: list[tuple[str, Path]] = []
    token = _GROUP.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    finally:
        _GROUP.reset(token)
    done = 0
    try:
        for tmp, target in pending:
            os.replace(tmp, target)
            done += 1
    except BaseException:
        for tmp, _ in pending[done:]:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` with :func:`numpy.save`, atomically."""
    with atomic_write(path, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)


def save_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, atomically (NaN/inf become ``null``)."""
    text = json.dumps(json_safe(obj), indent=2, ensure_ascii=False, allow_nan=False)
    save_text(path, text + "\n")


def save_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a UTF-8 text file atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def save_image(path: str | os.PathLike[str], image: np.ndarray, format: str | None = None) -> None:
    """Write an H x W x 3 (or H x W) ``uint8`` array as an image file (format from the suffix)."""
    from PIL import Image

    fmt = format or {".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower(), "PNG")
    with atomic_write(path, "wb") as fh:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(fh, format=fmt)


def json_safe(obj: Any) -> Any:
    """``obj`` with only JSON types: paths and numpy/torch values converted, NaN/inf as None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # arrays, tensors
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
