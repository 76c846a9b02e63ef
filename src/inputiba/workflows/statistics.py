"""Layer statistics for the workflows: where the estimation images come from (a folder, the
built-in stand-in crops, a saved file) and the per-model cache (:func:`_obtain_statistics`)."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inputiba import __version__
from inputiba.core.statistics import LayerStatistics, estimate_layer_statistics
from inputiba.data.assets import (
    BUILTIN_PHOTO_NAMES,
    cache_dir,
    standin_estimation_images,
)
from inputiba.data.io import (
    ImageReadError,
    collect_images,
    read_image,
)
from inputiba.errors import ExplainError, InputIBAWarning
from inputiba.models.image import model_fingerprint
from inputiba.models.resolve import (
    ResolvedModel,
    _one_line,
    _prepare,
)

#: Samples drawn from the built-in stand-in estimation set (random crops/flips of the photos).
STANDIN_SAMPLES = 256


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
            [__version__, model_fingerprint(rm.model), layer, list(_probe_shape(rm)), n, stamp],
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
