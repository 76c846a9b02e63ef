"""Explain image files (or arrays) in one call and write maps, overlays and a gallery.

:func:`explain_images` is what ``inputiba explain`` runs; from Python::

    from inputiba.workflows.explain import explain_images
    records = explain_images(["cat.jpg", "photos/"], model="efficientnet-lite0", out_dir="out")

Output contract, per image with output stem ``<stem>`` (the file name without its suffix, made
unique within the folder):

* ``<out>/<stem>.npy``: the InputIBA map, float32, H x W at the image's original size, in [0, 1];
* ``<out>/<stem>.png``: the image with the map overlaid, a colour bar, target class, probability;
* ``<out>/<stem>.feature.npy``: stage 1 (feature bottleneck) capacity, float32 H x W, bits per
  pixel (>= 0; the map sums to the layer's total information);
* ``<out>/<stem>.gan.npy``: stage 2 GAN input mask, float32 H x W in [0, 1];
* ``<out>/results.json``: a list with one record per image (see :data:`RECORD_KEYS`);
* ``<out>/index.html``: an offline gallery (see :mod:`inputiba.report.gallery`).

Every file is written atomically. A bad input (missing, unreadable, corrupt) is reported,
recorded in ``results.json`` with ``status: "failed"`` and skipped; the rest completes.
Problems that concern the whole run (unknown model or layer, weights that do not fit, a target
out of range or an unknown class name, a bad estimation source) raise :class:`ExplainError`
before anything is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from inputiba import __version__
from inputiba.core.functional import resize_map
from inputiba.core.layers import LayerNotFoundError, get_layer
from inputiba.core.statistics import LayerStatistics, estimate_layer_statistics
from inputiba.core.targets import resolve_target
from inputiba.data.assets import (
    BUILTIN_PHOTO_NAMES,
    builtin_photos,
    cache_dir,
    standin_estimation_images,
)
from inputiba.data.io import (
    ImageReadError,
    ImageSource,
    bound_image,
    check_output_dir,
    collect_images,
    file_group,
    read_image,
    save_json,
    save_npy,
)
from inputiba.errors import ExplainError, ImageSizeError, InputIBAError, InputIBAWarning
from inputiba.models.image import import_factory
from inputiba.models.image import load_weights as _load_weights
from inputiba.report.gallery import write_gallery, write_thumbnails
from inputiba.report.visualize import save_overlay

__all__ = [
    "explain_images",
    "run_seed",
    "ExplainError",
    "InputIBAWarning",
    "ResolvedModel",
    "resolve_model",
    "load_weights",
    "default_preprocess",
    "standin_batches",
    "folder_batches",
    "RECORD_KEYS",
    "DEFAULT_OUT_DIR",
    "STANDIN_SAMPLES",
    "MIN_IMAGE_SIDE",
    "MAX_IMAGE_SIDE",
]

#: Keys of every record in ``results.json`` (failed records have ``None`` where nothing is known).
RECORD_KEYS = (
    "name", "file", "status", "error", "size", "target", "probability", "predicted", "method",
    "settings", "seconds", "losses", "outputs", "feature_max_bits", "gan_range",
    "working_size", "warnings",
)

DEFAULT_OUT_DIR = "inputiba-out"

#: The files written per image, after its stem (``results.json``/``index.html`` are per run).
_OUTPUT_SUFFIXES = (".npy", ".png", ".feature.npy", ".gan.npy")

#: Samples drawn from the built-in stand-in estimation set (random crops/flips of the photos).
STANDIN_SAMPLES = 256

#: Images whose shorter side has fewer pixels are refused (:class:`ImageSizeError`): a map of
#: a few pixels explains nothing, and the overlay cannot be drawn.
MIN_IMAGE_SIDE = 8

#: The working resolution's bound: a larger image is read scaled down to this longer side (a
#: JPEG is decoded at a reduced scale) and a warning is recorded; its maps are still written
#: at the image's full size (the output contract, which ``inputiba evaluate`` reads). The
#: model sees its own input size either way.
MAX_IMAGE_SIDE = 4096

#: The longer side of the copy of an image that its overlay and thumbnails are drawn from.
DISPLAY_SIDE = 1400


# --------------------------------------------------------------------------------------------
# models


@dataclass
class ResolvedModel:
    """A classifier ready to explain.

    Attributes:
        model: the network, in eval mode, on its device.
        preprocess: PIL image -> (C, H, W) float tensor.
        name: how the model was named (for records and caching).
        class_names: the class names, or ``None`` when unknown.
        input_size: (H, W) the preprocess produces.
    """

    model: nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    name: str
    class_names: list[str] | None = None
    input_size: tuple[int, int] = (224, 224)
    num_classes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def default_preprocess() -> Callable[[Any], torch.Tensor]:
    """The preprocessing of models that bring none: resize the whole image (no crop) to
    224 x 224 and normalise with the ImageNet mean and std (:class:`inputiba.models.image.Preprocess`).
    """
    from inputiba.models.image import Preprocess

    return Preprocess()


def _resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if image.shape[:2] == tuple(size):
        return image
    pil = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR,
                                        reducing_gap=3.0)
    return np.asarray(pil)


def _import_factory(spec: str) -> Callable[..., Any]:
    """:func:`inputiba.models.image.import_factory`, its errors as :class:`ExplainError`."""
    try:
        return import_factory(spec)
    except ValueError as exc:
        raise ExplainError(str(exc)) from None


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """:func:`inputiba.models.image.load_weights`, its errors as :class:`ExplainError`."""
    try:
        _load_weights(model, path)
    except (ValueError, OSError) as exc:
        raise ExplainError(str(exc)) from None


def run_seed(seed: int | None, options: dict[str, Any]) -> int:
    """The run's seed: ``seed``, else ``options["seed"]`` (removed from ``options``), else 0.

    Raises:
        ExplainError: both given with different values, or a seed that is not an integer.
    """
    if "seed" in options:
        inner = options.pop("seed")
        if isinstance(inner, bool) or not isinstance(inner, int):
            raise ExplainError(f"seed must be an integer, got {inner!r}")
        if seed is not None and seed != inner:
            raise ExplainError(f"seed={seed} and options seed={inner} disagree; give one")
        return inner
    return 0 if seed is None else int(seed)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def resolve_model(
    model: str | nn.Module,
    weights: str | os.PathLike[str] | None = None,
    preprocess: Callable[[Any], torch.Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> ResolvedModel:
    """Turn a model name, factory spec or module into a :class:`ResolvedModel`.

    Args:
        model: a built-in name (``"efficientnet-lite0"``), a torchvision name or ``"timm:<name>"``
            (loaded by :func:`inputiba.models.image.load_model`), ``"module:factory"`` or
            ``"file.py:factory"``
            (the factory returns a model, ``(model, preprocess)`` or
            ``(model, preprocess, class_names)``), or an ``nn.Module``.
        weights: a weights file loaded into the model (strictly).
        preprocess: overrides the model's preprocessing (default: the loader's, else
            :func:`default_preprocess`).
        class_names: overrides the class names (default: ImageNet's for 1000-class models).
        device: where to run.

    Raises:
        ExplainError: unknown model, failing factory, weights that do not fit.
    """
    pre = None
    names = None
    if isinstance(model, nn.Module):
        net, label = model, type(model).__name__
        if weights is not None:
            load_weights(net, weights)
    elif isinstance(model, str) and ":" in model and not os.path.exists(model):
        factory = _import_factory(model)
        try:
            out = factory()
        except Exception as exc:  # noqa: BLE001
            raise ExplainError(f"Model factory {model!r} failed: {_one_line(exc)}") from None
        if isinstance(out, tuple):
            net = out[0]
            pre = out[1] if len(out) > 1 else None
            names = list(out[2]) if len(out) > 2 and out[2] is not None else None
        else:
            net = out
        if not isinstance(net, nn.Module):
            raise ExplainError(f"Model factory {model!r} returned {type(net).__name__}, "
                               "not a torch.nn.Module")
        label = model
        if weights is not None:
            load_weights(net, weights)
    elif isinstance(model, str):
        from inputiba.models.image import load_model

        label = model
        try:
            net, pre = load_model(model, weights=None if weights is None else os.fspath(weights))
        except Exception as exc:  # noqa: BLE001 - one line naming the culprit
            msg = _one_line(exc)
            culprit = str(weights) if weights is not None else model
            if culprit not in msg:
                msg = f"Cannot load {'weights file ' if weights else 'model '}{culprit!r}: {msg}"
            raise ExplainError(msg) from None
        if weights is None and model.lower() != "efficientnet-lite0":
            warnings.warn(
                f"Model {model!r} has random weights: pass a weights file (--weights FILE) to "
                "explain a trained model",
                InputIBAWarning,
                stacklevel=3,
            )
    else:
        raise ExplainError(f"model must be a name, 'module:factory' or an nn.Module, "
                           f"not {type(model).__name__}")
    pre = preprocess or pre or default_preprocess()
    net = net.to(device).eval()
    try:
        probe = pre(np.zeros((240, 320, 3), dtype=np.uint8))
    except Exception as exc:  # noqa: BLE001
        raise ExplainError(f"The preprocessing of model {label!r} failed on a test image: "
                           f"{_one_line(exc)}") from None
    if not isinstance(probe, torch.Tensor) or probe.dim() != 3:
        raise ExplainError(f"The preprocessing of model {label!r} must return a (C, H, W) "
                           f"tensor, got {getattr(probe, 'shape', type(probe).__name__)}")
    with torch.no_grad():
        try:
            logits = net(probe.unsqueeze(0).to(device))
        except Exception as exc:  # noqa: BLE001
            raise ExplainError(f"Model {label!r} failed on a {tuple(probe.shape)} input: "
                               f"{_one_line(exc)}") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ExplainError(f"Model {label!r} must return (batch, classes) logits, got "
                           f"{getattr(logits, 'shape', type(logits).__name__)}")
    n_classes = int(logits.shape[1])
    size = (int(probe.shape[1]), int(probe.shape[2]))
    if not _keeps_geometry(pre, size):
        warnings.warn(
            f"The preprocessing of model {label!r} crops or warps a {size[0]}x{size[1]} image; "
            "maps are mapped back as if it used the whole image. Pass a preprocess that only "
            "resizes and normalises for exact geometry.",
            InputIBAWarning,
            stacklevel=3,
        )
    if class_names is not None:
        names = list(class_names)
    if names is None and n_classes == 1000:
        with contextlib.suppress(Exception):
            from inputiba.models.image import imagenet_class_names

            names = list(imagenet_class_names())
    if names is not None and len(names) != n_classes:
        raise ExplainError(f"{len(names)} class names given for a model with {n_classes} classes")
    return ResolvedModel(net, pre, label, names, size, n_classes)


def _keeps_geometry(preprocess: Callable[[Any], torch.Tensor], size: tuple[int, int]) -> bool:
    """Whether ``preprocess`` maps an image of the model's input size pixel to pixel (only a
    per-channel affine normalisation), checked with constant and ramp images."""
    h, w = size
    try:
        lo = _prepare(preprocess, np.zeros((h, w, 3), dtype=np.uint8), size).float()
        hi = _prepare(preprocess, np.full((h, w, 3), 255, dtype=np.uint8), size).float()
        ramp = np.zeros((h, w, 3), dtype=np.uint8)
        ramp[..., 0] = np.linspace(0, 255, w).round().astype(np.uint8)[None, :]
        ramp[..., 1] = np.linspace(0, 255, h).round().astype(np.uint8)[:, None]
        got = _prepare(preprocess, ramp, size).float()
    except Exception:  # noqa: BLE001 - cannot tell; do not warn
        return True
    if got.shape != lo.shape or got.shape[0] < 2 or tuple(got.shape[1:]) != (h, w):
        return False
    expect = lo + (hi - lo) * torch.from_numpy(ramp).permute(2, 0, 1).float() / 255.0
    scale = (hi - lo).abs().amax().clamp_min(1e-6)
    return bool(((got - expect).abs()[:2].amax() / scale) < 0.05)


# --------------------------------------------------------------------------------------------
# targets


# --------------------------------------------------------------------------------------------
# estimation sources


def _prepare(preprocess: Callable[[Any], torch.Tensor], image: np.ndarray,
             size: tuple[int, int]) -> torch.Tensor:
    """``preprocess`` applied to the image resized (whole, no crop) to the model's input size."""
    with warnings.catch_warnings():
        # PIL -> numpy -> torch.from_numpy inside preprocessors warns that PIL's buffer is
        # read-only; the tensor is never written to, so this is noise for the user.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return preprocess(_pil(_resize_rgb(image, size)))


@dataclass
class _Loaded:
    """One image ready to explain: ``image`` at the working resolution (H' x W' x 3 uint8),
    ``x`` the model's input, ``size`` the full (H, W), ``notes`` warnings for its record."""

    index: int
    image: np.ndarray
    x: torch.Tensor
    size: tuple[int, int]
    notes: list[str]

    @property
    def working_size(self) -> tuple[int, int] | None:
        """(H', W') when the image was scaled down, else ``None``."""
        hw = (int(self.image.shape[0]), int(self.image.shape[1]))
        return None if hw == self.size else hw


def _load(index: int, src: ImageSource, rm: ResolvedModel) -> _Loaded:
    """Read ``src`` within :data:`MAX_IMAGE_SIDE` and prepare the model's input.

    Raises:
        ImageReadError: unreadable. ImageSizeError: smaller than :data:`MIN_IMAGE_SIDE`.
    """
    image, size = src.load_bounded(MAX_IMAGE_SIDE)
    if min(size) < MIN_IMAGE_SIDE:
        raise ImageSizeError(
            f"{src.label}: {size[0]} x {size[1]} pixels is too small to explain (each side "
            f"must be at least {MIN_IMAGE_SIDE} pixels)"
        )
    notes = []
    if tuple(image.shape[:2]) != size:
        note = (f"{src.label}: {size[0]} x {size[1]} pixels is explained at "
                f"{image.shape[0]} x {image.shape[1]} (longer side at most {MAX_IMAGE_SIDE}); "
                "the maps are written at the full size")
        warnings.warn(note, InputIBAWarning, stacklevel=2)
        notes.append(note)
    return _Loaded(index, image, _prepare(rm.preprocess, image, rm.input_size), size, notes)


def _to_batches(images: Iterator[np.ndarray], preprocess: Callable[[Any], torch.Tensor],
                size: tuple[int, int], batch_size: int) -> Iterator[torch.Tensor]:

    buf: list[torch.Tensor] = []
    for img in images:
        buf.append(_prepare(preprocess, img, size))
        if len(buf) == batch_size:
            yield torch.stack(buf)
            buf = []
    if buf:
        yield torch.stack(buf)


def standin_batches(preprocess: Callable[[Any], torch.Tensor], size: tuple[int, int],
                    n_samples: int = STANDIN_SAMPLES, batch_size: int = 32,
                    seed: int = 0) -> Iterator[torch.Tensor]:
    """Batches of the built-in stand-in estimation set
    (:func:`inputiba.data.assets.standin_estimation_images`: random crops and flips of the built-in
    photos), preprocessed for the model. Deterministic for a given ``seed``. A stand-in only:
    real statistics come from a few hundred images like the ones being explained.
    """
    images = standin_estimation_images(n_samples, size=max(size), seed=seed)
    return _to_batches(iter(images), preprocess, size, batch_size)


def folder_batches(files: Sequence[Path], preprocess: Callable[[Any], torch.Tensor],
                   size: tuple[int, int], batch_size: int = 32,
                   skipped: list[str] | None = None) -> Iterator[torch.Tensor]:
    """Batches of the (resized, preprocessed) images in ``files``; unreadable ones are skipped
    and their messages appended to ``skipped``."""

    def images() -> Iterator[np.ndarray]:
        for f in files:
            try:
                yield read_image(f)
            except ImageReadError as exc:
                if skipped is not None:
                    skipped.append(str(exc))

    return _to_batches(images(), preprocess, size, batch_size)


def _model_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha1(type(model).__name__.encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _layer_shape(rm: ResolvedModel, layer: str, device: str | torch.device) -> tuple[int, ...]:
    from inputiba.core.layers import layer_output

    x = torch.zeros(1, *_probe_shape(rm), device=device)
    with torch.no_grad():
        return tuple(layer_output(rm.model, layer, x).shape[1:])


def _probe_shape(rm: ResolvedModel) -> tuple[int, ...]:
    return tuple(rm.preprocess(np.zeros((*rm.input_size, 3), dtype=np.uint8)).shape)


def _obtain_statistics(
    rm: ResolvedModel, layer: str, estimation: Any, statistics: Any, n_samples: int | None,
    device: str | torch.device, seed: int, progress: bool,
) -> tuple[LayerStatistics, dict[str, Any]]:
    """Statistics from a LayerStatistics, a file, a folder, or the stand-in (cached)."""
    shape = _layer_shape(rm, layer, device)
    source = statistics if statistics is not None else estimation
    info: dict[str, Any] = {}
    if isinstance(source, LayerStatistics):
        stats, info = source, {"source": "given"}
    elif source is not None and Path(source).is_file():
        try:
            stats = LayerStatistics.load(source)
        except Exception as exc:  # noqa: BLE001
            raise ExplainError(f"Cannot read statistics file {source}: {_one_line(exc)}") \
                from None
        info = {"source": str(source), "kind": "file"}
    else:
        if source is not None:
            folder = Path(source)
            if not folder.is_dir():
                raise ExplainError(f"Estimation source {folder} does not exist (give a folder "
                                   "of images or a saved statistics file)")
            files = [s.path for s in collect_images([folder], recursive=True) if s.error is None]
            if not files:
                raise ExplainError(f"Estimation folder {folder} contains no images")
            n = len(files) if n_samples is None else min(n_samples, len(files))
            stamp = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns)
                     for f in files[:n]]
            kind = "folder"
        else:
            n = n_samples or STANDIN_SAMPLES
            stamp = ["standin-v2", list(BUILTIN_PHOTO_NAMES), seed]
            kind = "built-in stand-in"
            warnings.warn(
                f"No estimation set given: layer statistics come from a built-in stand-in "
                f"({n} random crops and flips of {len(BUILTIN_PHOTO_NAMES)} built-in photos). "
                "For faithful maps pass a folder of a few hundred images like yours "
                "(--estimation DIR; Python: estimation=DIR).",
                InputIBAWarning,
                stacklevel=3,
            )
        key = hashlib.sha1(json.dumps(
            [__version__, _model_fingerprint(rm.model), layer, list(_probe_shape(rm)), n, stamp],
            default=str,
        ).encode()).hexdigest()[:20]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{rm.name}__{layer}")
        path = cache_dir() / "statistics" / f"{safe[-80:]}__{key}.pt"
        info = {"source": str(source) if source is not None else "built-in stand-in",
                "kind": kind, "cache": str(path)}
        if path.is_file():
            try:
                stats = LayerStatistics.load(path)
                info["cached"] = True
            except Exception:  # noqa: BLE001 - a broken cache entry is re-estimated
                stats = None
        else:
            stats = None
        if stats is None:
            skipped: list[str] = []
            if kind == "folder":
                batches = folder_batches(files[:n], rm.preprocess, rm.input_size, skipped=skipped)
            else:
                batches = standin_batches(rm.preprocess, rm.input_size, n, seed=seed)
            t0 = time.perf_counter()
            stats = estimate_layer_statistics(rm.model, layer, batches, n_samples=n,
                                              device=device, progress=progress)
            info["seconds"] = round(time.perf_counter() - t0, 3)
            if skipped:
                warnings.warn(f"{len(skipped)} unreadable estimation images skipped "
                              f"(first: {skipped[0]})", InputIBAWarning, stacklevel=3)
            path.parent.mkdir(parents=True, exist_ok=True)
            stats.save(path, model=rm.name, layer=layer, source=info["source"])
            info["cached"] = False
    if tuple(stats.shape) != shape:
        raise ExplainError(
            f"Statistics {info.get('source')} have shape {tuple(stats.shape)} but layer "
            f"{layer!r} outputs {shape}: they were estimated for another model or layer"
        )
    info["samples"] = int(stats.n)
    return stats, info


# --------------------------------------------------------------------------------------------
# the run


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class _BaselineAdapter:
    """Another method of :mod:`inputiba.methods.image` behind InputIBA's ``attribute`` call."""

    def __init__(self, method: str, rm: ResolvedModel, layer: str | None, user_layer: str | None,
                 options: Mapping[str, Any]) -> None:
        from inputiba.methods.image import get_explainer

        self.method = method
        chosen = layer if method == "iba" else user_layer if method == "gradcam" else None
        try:
            self.explainer = get_explainer(method, rm.model, chosen, **dict(options))
        except (TypeError, ValueError, KeyError) as exc:
            raise ExplainError(f"Invalid {method} settings (options {dict(options)}): "
                               f"{_one_line(exc)}") from None

    @property
    def statistics(self) -> Any:
        return getattr(self.explainer, "statistics", None)

    @statistics.setter
    def statistics(self, value: Any) -> None:
        self.explainer.statistics = value  # IBA only

    def attribute(self, x: torch.Tensor, target: Any = None, seed: Any = None,
                  return_details: bool = True) -> Any:
        from types import SimpleNamespace

        t0 = time.perf_counter()
        res = self.explainer.attribute(x, target, return_raw=True)
        return SimpleNamespace(attribution=res.map, targets=res.targets,
                               seconds={self.method: time.perf_counter() - t0}, losses={})


def _make_explainer(rm: ResolvedModel, layer: str, preset: str,
                    options: Mapping[str, Any], progress: bool) -> Any:
    from inputiba import InputIBA

    try:
        return InputIBA(rm.model, layer, preset=preset, progress=progress, **dict(options))
    except (TypeError, ValueError, KeyError) as exc:
        raise ExplainError(f"Invalid InputIBA settings (preset {preset!r}, "
                           f"options {dict(options)}): {_one_line(exc)}") from None


def _map_back(t: torch.Tensor | None, size: tuple[int, int], preserve_sum: bool = False,
              clip01: bool = False) -> np.ndarray | None:
    if t is None:
        return None
    m = t.detach().float().cpu()
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[None]
    if m.shape[1] != 1:
        m = m.mean(1, keepdim=True)
    h, w = m.shape[-2:]
    out = resize_map(m, size)
    if out.data_ptr() == m.data_ptr():
        out = out.clone()
    # in place from here: a full-size map of a large photo is hundreds of MB
    if preserve_sum:
        out.mul_((h * w) / (size[0] * size[1]))
    torch.nan_to_num_(out, nan=0.0, posinf=0.0, neginf=0.0)
    out.clamp_(0.0, 1.0) if clip01 else out.clamp_(min=0.0)
    return out[0, 0].numpy()


def _class_name(rm: ResolvedModel, idx: int | None) -> str | None:
    if idx is None:
        return None
    return rm.class_names[idx] if rm.class_names else f"class {idx}"


def _failed_record(src: ImageSource, error: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    rec.update(name=src.name, file=src.label, status="failed", error=error, method="InputIBA",
               settings=dict(settings))
    return rec


def _merge_results(out_dir: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier records of the folder (other images) followed/updated by this run's."""
    path = out_dir / "results.json"
    old: list[dict[str, Any]] = []
    if path.is_file():
        with contextlib.suppress(Exception):
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, list):
                old = [r for r in data if isinstance(r, dict) and "name" in r]
    merged: dict[str, dict[str, Any]] = {r["name"]: r for r in old}
    for r in records:
        before = merged.get(r["name"])
        if r.get("status") != "ok" and before is not None and _still_ok(out_dir, before):
            continue  # a later failure never downgrades a finished result (its files stand)
        merged[r["name"]] = r
    return list(merged.values())


def _still_ok(out_dir: Path, record: Mapping[str, Any]) -> bool:
    """Whether ``record`` is an ``ok`` record whose output files are all still there."""
    outputs = record.get("outputs")
    if record.get("status") != "ok" or not isinstance(outputs, Mapping) or not outputs:
        return False
    return all(isinstance(f, str) and (out_dir / f).is_file() for f in outputs.values())


def _write_index(out_dir: Path, records: list[dict[str, Any]], subtitle: str) -> None:
    all_records = _merge_results(out_dir, records)
    save_json(out_dir / "results.json", all_records)
    write_gallery(out_dir, all_records, subtitle=subtitle)


def explain_images(
    images: Iterable[Any] | str | os.PathLike[str] | None = None,
    model: str | nn.Module = "efficientnet-lite0",
    weights: str | os.PathLike[str] | None = None,
    layer: str | None = None,
    target: int | str | Sequence[int | str | None] | None = None,
    estimation: str | os.PathLike[str] | None = None,
    statistics: LayerStatistics | str | os.PathLike[str] | None = None,
    preset: str = "fast",
    options: Mapping[str, Any] | None = None,
    batch_size: int = 2,
    device: str | torch.device | None = None,
    seed: int | None = None,
    out_dir: str | os.PathLike[str] = DEFAULT_OUT_DIR,
    estimation_samples: int | None = None,
    preprocess: Callable[[Any], torch.Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    progress: bool = True,
    method: str = "inputiba",
) -> list[dict[str, Any]]:
    """Explain images with InputIBA and write the output contract into ``out_dir``.

    Args:
        images: files, folders (their jpg/png/bmp/tiff/webp files), arrays (H x W [x 3|4]) or
            PIL images; a single path is accepted. ``None`` or empty: the built-in photos
            (:func:`inputiba.data.assets.builtin_photos`).
        model: ``"efficientnet-lite0"``, a torchvision name, ``"timm:<name>"``,
            ``"module:factory"``, ``"file.py:factory"`` or an ``nn.Module`` (see
            :func:`resolve_model`).
        weights: a weights file for the model.
        layer: the hidden layer of stage 1 (default: :func:`inputiba.models.image.default_layer`).
        target: class index or name for all images, or one per image (``None`` entries: the
            predicted class). Default: each image's predicted class.
        estimation: a folder of images to estimate the layer's statistics from, or a statistics
            file saved by :meth:`LayerStatistics.save`. Default: the built-in stand-in
            (:func:`standin_batches`), with an :class:`InputIBAWarning`. Estimated statistics
            are cached under ``inputiba.data.assets.cache_dir() / "statistics"``.
        statistics: ready statistics (object or file); takes precedence over ``estimation``.
        preset: ``"fast"`` or ``"paper"`` (the original settings).
        options: InputIBA hyper-parameter overrides (keyword arguments of ``InputIBA``).
        batch_size: images explained together (all three stages run on the batch at once;
            memory grows with it: about 2.5 GB per image for EfficientNet-Lite0 at 224 px
            with the ``fast`` preset, mostly the WGAN's generator batch).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        seed: seeds torch and the stand-in estimation set; image ``i`` of the run uses
            ``seed + i``. Default: ``options["seed"]`` when given, else 0.
        out_dir: the output folder (created; files of other images already there are kept, and
            ``results.json`` / ``index.html`` list them too).
        estimation_samples: at most this many estimation samples (default: all images of the
            folder, :data:`STANDIN_SAMPLES` for the stand-in).
        preprocess: overrides the model's preprocessing (PIL image -> (C, H, W) tensor).
        class_names: overrides the class names.
        progress: report progress on stderr: one line per finished image and a one-line
            summary; on a terminal also one progress bar at a time (the current stage's, or
            the estimation's). When stderr is not a terminal (a log file, CI, ``nohup``) no
            bar is drawn, so a log gets a few lines per image, not redraws.
            Skipped inputs are reported on stderr either way.
        method: the attribution method, one of :func:`inputiba.methods.image.available_explainers`
            (default ``"inputiba"``). Other methods write the same files except the stage-1/2
            maps; ``layer`` is IBA's layer, Grad-CAM's when given (else its last spatial
            layer), and unused by the rest; ``options`` go to the method's constructor.

    Returns:
        This run's records (as written to ``results.json``), one per input, in input order;
        ``record["status"]`` is ``"ok"`` or ``"failed"``.

    Raises:
        ExplainError: a problem with the run as a whole (nothing is written then).
    """
    t_start = time.perf_counter()
    if batch_size < 1:
        raise ExplainError(f"batch size must be at least 1, got {batch_size}")
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    inputs = list(images) if images is not None else []
    if not inputs:
        inputs = list(builtin_photos().items())
    sources = collect_images(inputs)
    if isinstance(target, (list, tuple)):
        if len(target) != len(sources):
            raise ExplainError(f"{len(target)} targets given for {len(sources)} images")
        targets_in: list[Any] = list(target)
    else:
        targets_in = [target] * len(sources)

    out = check_output_dir(out_dir)  # before any work: a clear line, not a late failure
    for src in sources:
        if src.path is not None and src.error is None and src.path.is_file():
            for suffix in _OUTPUT_SUFFIXES:
                if (out / f"{src.name}{suffix}").resolve() == src.path.resolve():
                    raise ExplainError(
                        f"Output folder {out} would overwrite the input image {src.path}; "
                        "choose another output folder (--out DIR)"
                    )

    def report(msg: str) -> None:
        if progress:
            tqdm.write(f"inputiba: {msg}", file=sys.stderr)
        else:
            print(f"inputiba: {msg}", file=sys.stderr)

    records: list[dict[str, Any] | None] = [None] * len(sources)
    if all(src.error is not None for src in sources):
        # nothing to explain (missing paths, empty folders): say so without loading a model
        settings0 = {"model": model if isinstance(model, str) else type(model).__name__,
                     "inputiba": __version__}
        for i, src in enumerate(sources):
            records[i] = _failed_record(src, str(src.error), settings0)
            report(f"skipped {src.error}")
        done = [r for r in records if r is not None]
        out.mkdir(parents=True, exist_ok=True)
        _write_index(out, done, "nothing explained")
        if progress:
            print(f"inputiba: explained 0 of {len(done)} images -> {out / 'index.html'}",
                  file=sys.stderr)
        return done

    opts = dict(options or {})
    seed = run_seed(seed, opts)
    device = str(device or _default_device())
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ExplainError(f"Unknown device {device!r}: {_one_line(exc)}") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ExplainError(f"Device {device!r} requested but CUDA is not available")
    torch.manual_seed(seed)

    from inputiba.methods.image import available_explainers

    method = method.strip().lower().replace("-", "_")
    if method not in available_explainers():
        raise ExplainError(
            f"Unknown method {method!r}; choose from {', '.join(available_explainers())}"
        )
    rm = resolve_model(model, weights, preprocess, class_names, device)
    user_layer = layer
    if layer is None:
        from inputiba.models.image import default_layer

        layer = default_layer(rm.name) if isinstance(model, str) else None
        if layer is None and method in ("inputiba", "iba"):
            raise ExplainError(
                f"No default layer known for model {rm.name!r}; pass one (--layer NAME), e.g. "
                "the output of a middle convolutional block (inputiba.core.layers.layer_names(model) "
                "lists them)"
            )
    try:
        if layer is not None:
            get_layer(rm.model, layer)
    except LayerNotFoundError as exc:
        raise ExplainError(str(exc)) from None
    resolved_targets = [resolve_target(t, rm.class_names, rm.num_classes) for t in targets_in]
    live = progress and is_terminal(sys.stderr)  # bars only where they redraw in place
    stats_info = None
    if method == "inputiba":
        explainer = _make_explainer(rm, layer, preset, opts, live)
    else:
        explainer = _BaselineAdapter(method, rm, layer, user_layer, opts)
    if method in ("inputiba", "iba"):
        stats, stats_info = _obtain_statistics(rm, layer, estimation, statistics,
                                               estimation_samples, device, seed, live)
        explainer.statistics = stats

    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "model": rm.name, "weights": None if weights is None else str(weights), "layer": layer,
        "preset": preset, "options": opts, "batch_size": batch_size, "device": device,
        "seed": seed, "input_size": list(rm.input_size), "statistics": stats_info,
        "inputiba": __version__, "method": method,
    }
    subtitle = f"model {rm.name}, layer {layer}, preset {preset}"
    if method != "inputiba":
        subtitle = f"{method}, model {rm.name}"

    finished = 0
    for start in range(0, len(sources), batch_size):
        chunk = list(range(start, min(start + batch_size, len(sources))))
        loaded: list[_Loaded] = []
        for i in chunk:
            src = sources[i]
            try:
                loaded.append(_load(i, src, rm))
            except (ImageReadError, ValueError, OSError) as exc:
                msg = str(exc) if isinstance(exc, InputIBAError) else \
                    f"{src.label}: {_one_line(exc)}"
                records[i] = _failed_record(src, msg, settings)
                report(f"skipped {msg}")
        if loaded:
            _explain_chunk(explainer, rm, loaded, sources, resolved_targets, records,
                           settings, out, device, seed, report)
        for i in chunk:
            finished += 1
            rec = records[i]
            if progress and rec is not None and rec["status"] == "ok":
                report(done_line(finished, len(sources), rec))
        _write_index(out, [r for r in records if r is not None], subtitle)
    done = [r for r in records if r is not None]
    _write_index(out, done, subtitle)

    if progress:
        ok = sum(r["status"] == "ok" for r in done)
        failed = [r["name"] for r in done if r["status"] != "ok"]
        line = (f"inputiba: explained {ok} of {len(done)} images in "
                f"{time.perf_counter() - t_start:.1f} s -> {out / 'index.html'}")
        if failed:
            line += f" ({len(failed)} failed: {', '.join(failed[:5])}" + \
                (", ..." if len(failed) > 5 else "") + ")"
        print(line, file=sys.stderr)
    return done


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (where progress bars redraw in place)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def done_line(k: int, n: int, rec: Mapping[str, Any]) -> str:
    """The progress line of a finished image: ``[k/n] name: class (p = 0.83), 12.3 s``."""
    target = rec.get("target") or {}
    seconds = sum(v for v in (rec.get("seconds") or {}).values() if isinstance(v, (int, float)))
    prob = rec.get("probability")
    p = f" (p = {prob:.2f})" if isinstance(prob, float) else ""
    return f"[{k}/{n}] {rec.get('name')}: {target.get('name')}{p}, {seconds:.1f} s"


def _final_losses(values: Any, j: int) -> Any:
    """The last value of sample ``j``'s loss curve(s): (B, steps) tensors, or dicts of them."""
    if isinstance(values, Mapping):
        return {k: _final_losses(v, j) for k, v in values.items()}
    try:
        return float(torch.as_tensor(values)[j].reshape(-1)[-1])
    except (IndexError, TypeError, ValueError, RuntimeError):
        return None


def _pil(arr: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(arr)


def _explain_chunk(explainer: Any, rm: ResolvedModel,
                   loaded: list[_Loaded],
                   sources: list[ImageSource], resolved_targets: list[int | None],
                   records: list[dict[str, Any] | None], settings: Mapping[str, Any], out: Path,
                   device: str, seed: int, report: Callable[[str], None]) -> None:
    idx = [item.index for item in loaded]
    x = torch.stack([item.x for item in loaded]).to(device)
    try:
        with torch.no_grad():
            probs = torch.softmax(rm.model(x).float(), dim=1).cpu()
        predicted = probs.argmax(1).tolist()
        targets = [t if t is not None else p for t, p in
                   zip((resolved_targets[i] for i in idx), predicted, strict=True)]
        res = explainer.attribute(x, target=targets, seed=[seed + i for i in idx],
                                  return_details=True)
    except Exception as exc:  # noqa: BLE001 - the batch fails, the run goes on
        for i in idx:
            msg = f"{sources[i].label}: explanation failed: {type(exc).__name__}: {_one_line(exc)}"
            records[i] = _failed_record(sources[i], msg, settings)
            report(msg)
        return
    n = len(idx)
    seconds = {k: float(v) / n for k, v in (getattr(res, "seconds", None) or {}).items()}
    losses_all = getattr(res, "losses", None) or {}
    res_targets = getattr(res, "targets", None)
    res_probs = getattr(res, "probabilities", None)
    for j, item in enumerate(loaded):
        i, img, src = item.index, item.image, sources[item.index]
        size = item.size
        # the overlay (7 inches at 100 dpi) and the thumbnails are drawn from a copy of at most
        # DISPLAY_SIDE pixels: drawing a phone photo at full size took most of a minute
        img = bound_image(img, DISPLAY_SIDE)
        work = (int(img.shape[0]), int(img.shape[1]))
        t0 = time.perf_counter()
        feature_t = getattr(res, "feature_map", None)
        gan_t = getattr(res, "gan_mask", None)
        try:
            tgt = int(res_targets[j]) if res_targets is not None else targets[j]
            prob = float(res_probs[j]) if res_probs is not None else float(probs[j, tgt])
            outputs = {"map": f"{src.name}.npy", "overlay": f"{src.name}.png"}
            stats: dict[str, Any] = {}
            shown: dict[str, np.ndarray | None] = {"feature": None, "gan": None}
            with file_group():  # all of this image's files, or none of them
                for key, t, kwargs in (("map", res.attribution[j], {"clip01": True}),
                                       ("feature", None if feature_t is None else feature_t[j],
                                        {"preserve_sum": True}),
                                       ("gan", None if gan_t is None else gan_t[j],
                                        {"clip01": True})):
                    full = _map_back(t, size, **kwargs)
                    if full is None:
                        continue
                    outputs[key] = f"{src.name}{'.npy' if key == 'map' else f'.{key}.npy'}"
                    save_npy(out / outputs[key], full)
                    stats[key] = (float(full.min()), float(full.max()))
                    shown[key] = full if work == size else _map_back(t, work, **kwargs)
                    del full  # one full-size map in memory at a time
                attribution = shown.pop("map")
                assert attribution is not None
                save_overlay(out / outputs["overlay"], img, attribution, _class_name(rm, tgt),
                             prob)
                write_thumbnails(out, src.name, img, shown["feature"], shown["gan"],
                                 attribution)
        except Exception as exc:  # noqa: BLE001 - e.g. disk full: this image fails
            msg = f"{src.label}: writing the results failed: {type(exc).__name__}: " \
                  f"{_one_line(exc)}"
            records[i] = _failed_record(src, msg, settings)
            report(msg)
            continue
        losses = {stage: _final_losses(values, j) for stage, values in losses_all.items()}
        rec: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
        rec.update(
            name=src.name, file=src.label, status="ok", error=None, size=list(size),
            target={"index": tgt, "name": _class_name(rm, tgt)},
            probability=prob,
            predicted={"index": predicted[j], "name": _class_name(rm, predicted[j]),
                       "probability": float(probs[j, predicted[j]])},
            method={"inputiba": "InputIBA"}.get(settings.get("method", "inputiba"),
                                                settings.get("method")),
            settings=dict(settings),
            seconds={**seconds, "write": round(time.perf_counter() - t0, 3)},
            losses=losses, outputs=outputs,
            feature_max_bits=stats["feature"][1] if "feature" in stats else None,
            gan_range=list(stats["gan"]) if "gan" in stats else None,
            working_size=None if item.working_size is None else list(item.working_size),
            warnings=list(item.notes),
        )
        records[i] = rec
