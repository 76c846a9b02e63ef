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
* ``<out>/<stem>.gan.npy``: stage 2 GAN input mask, float32 H x W in [0, 1] (without stage 2,
  ``gan_epochs`` 0 as in ``consensus``: the GAN's initial mask, stage 3's prior; the record's
  ``gan_trained`` is then false);
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
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from inputiba import __version__
from inputiba.core.config import DEFAULT_PRESET
from inputiba.core.layers import LayerNotFoundError, get_layer
from inputiba.core.statistics import LayerStatistics
from inputiba.core.targets import resolve_target
from inputiba.data.assets import (
    builtin_photos,
)
from inputiba.data.io import (
    ImageReadError,
    ImageSource,
    check_output_dir,
    collect_images,
)
from inputiba.errors import ExplainError, ImageSizeError, InputIBAError, InputIBAWarning
from inputiba.models.resolve import (
    ResolvedModel,
    _one_line,
    _prepare,
    default_preprocess,
    load_weights,
    resolve_model,
)
from inputiba.workflows.image_outputs import (
    _explain_chunk,
    _Loaded,
)
from inputiba.workflows.records import (
    RECORD_KEYS,
    _failed_record,
    _write_index,
    done_line,
    is_terminal,
)
from inputiba.workflows.statistics import (
    STANDIN_SAMPLES,
    _obtain_statistics,
    folder_batches,
    standin_batches,
)

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


DEFAULT_OUT_DIR = "inputiba-out"

#: The files written per image, after its stem (``results.json``/``index.html`` are per run).
_OUTPUT_SUFFIXES = (".npy", ".png", ".feature.npy", ".gan.npy")


#: Images whose shorter side has fewer pixels are refused (:class:`ImageSizeError`): a map of
#: a few pixels explains nothing, and the overlay cannot be drawn.
MIN_IMAGE_SIDE = 8

#: The working resolution's bound: a larger image is read scaled down to this longer side (a
#: JPEG is decoded at a reduced scale) and a warning is recorded; its maps are still written
#: at the image's full size (the output contract, which ``inputiba evaluate`` reads). The
#: model sees its own input size either way.
MAX_IMAGE_SIDE = 4096



# --------------------------------------------------------------------------------------------
# models


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


# --------------------------------------------------------------------------------------------
# targets


# --------------------------------------------------------------------------------------------
# estimation sources




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


def _gather(images: Any, target: Any) -> tuple[list[ImageSource], list[Any]]:
    """The image sources (the built-in photos when none are given) and one target each."""
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    inputs = list(images) if images is not None else []
    if not inputs:
        inputs = list(builtin_photos().items())
    sources = collect_images(inputs)
    if isinstance(target, (list, tuple)):
        if len(target) != len(sources):
            raise ExplainError(f"{len(target)} targets given for {len(sources)} images")
        return sources, list(target)
    return sources, [target] * len(sources)


def _checked_output(out_dir: str | os.PathLike[str], sources: Sequence[ImageSource]) -> Path:
    """The output folder, writable and not about to overwrite an input image."""
    out = check_output_dir(out_dir)
    for src in sources:
        if src.path is not None and src.error is None and src.path.is_file():
            for suffix in _OUTPUT_SUFFIXES:
                if (out / f"{src.name}{suffix}").resolve() == src.path.resolve():
                    raise ExplainError(
                        f"Output folder {out} would overwrite the input image {src.path}; "
                        "choose another output folder (--out DIR)"
                    )
    return out


def _reporter(progress: bool) -> Callable[[str], None]:
    def report(msg: str) -> None:
        if progress:
            tqdm.write(f"inputiba: {msg}", file=sys.stderr)
        else:
            print(f"inputiba: {msg}", file=sys.stderr)

    return report


def _nothing_to_explain(sources: Sequence[ImageSource], model: Any, out: Path, progress: bool,
                        report: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every input failed to resolve (missing paths, empty folders): records, no model load."""
    settings0 = {"model": model if isinstance(model, str) else type(model).__name__,
                 "inputiba": __version__}
    done = []
    for src in sources:
        done.append(_failed_record(src, str(src.error), settings0))
        report(f"skipped {src.error}")
    out.mkdir(parents=True, exist_ok=True)
    _write_index(out, done, "nothing explained")
    if progress:
        print(f"inputiba: explained 0 of {len(done)} images -> {out / 'index.html'}",
              file=sys.stderr)
    return done


def _summary_line(done: Sequence[Mapping[str, Any]], seconds: float, out: Path) -> str:
    ok = sum(r["status"] == "ok" for r in done)
    failed = [r["name"] for r in done if r["status"] != "ok"]
    line = f"inputiba: explained {ok} of {len(done)} images in {seconds:.1f} s -> " \
        f"{out / 'index.html'}"
    if failed:
        line += f" ({len(failed)} failed: {', '.join(failed[:5])}" + \
            (", ..." if len(failed) > 5 else "") + ")"
    return line


@dataclass
class _Run:
    """What a run resolved before its first image: model, layer, method, explainer, seed."""

    rm: ResolvedModel
    layer: str | None
    method: str
    explainer: Any
    options: dict[str, Any]
    device: str
    seed: int
    stats_info: dict[str, Any] | None


def _prepare_run(model: Any, weights: Any, layer: str | None, preset: str,
                 options: Mapping[str, Any] | None, device: Any, seed: int | None, method: str,
                 preprocess: Any, class_names: Any, estimation: Any, statistics: Any,
                 estimation_samples: int | None, progress: bool) -> _Run:
    """Check the device and method, load the model, find the layer, build the explainer and
    give it statistics; every problem here is an :class:`ExplainError` before any output."""
    from inputiba.methods import available_explainers
    from inputiba.models.image import default_layer

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
    method = method.strip().lower().replace("-", "_")
    if method not in available_explainers():
        raise ExplainError(
            f"Unknown method {method!r}; choose from {', '.join(available_explainers())}"
        )
    rm = resolve_model(model, weights, preprocess, class_names, device)
    user_layer = layer
    if layer is None:
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
    live = progress and is_terminal(sys.stderr)  # bars only where they redraw in place
    if method == "inputiba":
        explainer = _make_explainer(rm, layer, preset, opts, live)
    else:
        explainer = _BaselineAdapter(method, rm, layer, user_layer, opts)
    stats_info = None
    if method in ("inputiba", "iba"):
        stats, stats_info = _obtain_statistics(rm, layer, estimation, statistics,
                                               estimation_samples, device, seed, live)
        explainer.statistics = stats
    return _Run(rm, layer, method, explainer, opts, device, seed, stats_info)


def explain_images(
    images: Iterable[Any] | str | os.PathLike[str] | None = None,
    model: str | nn.Module = "efficientnet-lite0",
    weights: str | os.PathLike[str] | None = None,
    layer: str | None = None,
    target: int | str | Sequence[int | str | None] | None = None,
    estimation: str | os.PathLike[str] | None = None,
    statistics: LayerStatistics | str | os.PathLike[str] | None = None,
    preset: str = DEFAULT_PRESET,
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
        preset: a name of :data:`~inputiba.core.config.PRESETS` (default
            :data:`~inputiba.core.config.DEFAULT_PRESET`; ``"paper"``: the original settings).
        options: InputIBA hyper-parameter overrides (keyword arguments of ``InputIBA``).
        batch_size: images explained together (all three stages run on the batch at once;
            memory grows with it: about 2.5 GB per image for EfficientNet-Lite0 at 224 px
            with the ``fast`` preset, mostly the WGAN's generator batch).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        seed: seeds torch and the stand-in estimation set; image ``i`` of the run uses
            ``seed + i * K`` (ensemble K). Default: ``options["seed"]`` when given, else 0.
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
        ModelError: the model and layer cannot work with the method (e.g. Grad-CAM at a layer
            without a (B, C, h, w) output), found at the first batch: the run stops there
            instead of failing every image the same way.
    """
    t_start = time.perf_counter()
    if batch_size < 1:
        raise ExplainError(f"batch size must be at least 1, got {batch_size}")
    sources, targets_in = _gather(images, target)
    out = _checked_output(out_dir, sources)  # before any work: a clear line, not a late failure
    report = _reporter(progress)
    if all(src.error is not None for src in sources):
        return _nothing_to_explain(sources, model, out, progress, report)
    run = _prepare_run(model, weights, layer, preset, options, device, seed, method, preprocess,
                       class_names, estimation, statistics, estimation_samples, progress)
    resolved_targets = [resolve_target(t, run.rm.class_names, run.rm.num_classes)
                        for t in targets_in]
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "model": run.rm.name, "weights": None if weights is None else str(weights),
        "layer": run.layer, "preset": preset, "options": run.options, "batch_size": batch_size,
        "device": run.device, "seed": run.seed, "input_size": list(run.rm.input_size),
        "statistics": run.stats_info, "inputiba": __version__, "method": run.method,
    }
    subtitle = (f"model {run.rm.name}, layer {run.layer}, preset {preset}"
                if run.method == "inputiba" else f"{run.method}, model {run.rm.name}")
    records: list[dict[str, Any] | None] = [None] * len(sources)
    finished = 0
    for start in range(0, len(sources), batch_size):
        chunk = list(range(start, min(start + batch_size, len(sources))))
        load_and_explain(chunk, sources, run.rm, run.explainer, resolved_targets, records,
                         settings, out, run.device, run.seed, report)
        for i in chunk:
            finished += 1
            rec = records[i]
            if progress and rec is not None and rec["status"] == "ok":
                report(done_line(finished, len(sources), rec))
        _write_index(out, [r for r in records if r is not None], subtitle)
    done = [r for r in records if r is not None]
    _write_index(out, done, subtitle)
    if progress:
        print(_summary_line(done, time.perf_counter() - t_start, out), file=sys.stderr)
    return done


def load_and_explain(indices: Sequence[int], sources: Any, rm: ResolvedModel, explainer: Any,
                     targets: Any, records: Any, settings: Mapping[str, Any], out: Path,
                     device: str, seed: int, report: Callable[[str], None],
                     accelerate: Any = None) -> None:
    """Read the images ``indices`` of ``sources``, record the unreadable ones as failed, and
    explain the rest as one batch (inside ``accelerate``, a context manager, when given);
    ``records[i]`` is set for every index."""
    loaded: list[_Loaded] = []
    for i in indices:
        src = sources[i]
        try:
            loaded.append(_load(i, src, rm))
        except (ImageReadError, ValueError, OSError) as exc:
            msg = str(exc) if isinstance(exc, InputIBAError) else f"{src.label}: {_one_line(exc)}"
            records[i] = _failed_record(src, msg, settings)
            report(f"skipped {msg}")
    if loaded:
        with accelerate if accelerate is not None else contextlib.nullcontext():
            _explain_chunk(explainer, rm, loaded, sources, targets, records, settings, out,
                           device, seed, report)


