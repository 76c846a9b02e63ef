"""Dataset-scale attribution: resumable, fault-tolerant, sharded over processes and GPUs.

:func:`explain_dataset` is what ``inputiba explain-dataset`` runs. It explains every image of a
dataset (:func:`inputiba.data.folders.list_dataset`: an ImageNet folder, a plain folder, a subset)
with the same per-image outputs as :func:`inputiba.workflows.explain.explain_images` (it reuses its model
resolution, statistics and per-batch writer), and adds:

* **Resume**: every finished item is appended (and fsync'ed) as one JSON line to
  ``<out>/records/rank<r>.jsonl`` right after its files are written. Rerunning the same command
  skips the items whose record says ``ok`` and whose output files all exist; a crash or Ctrl-C
  loses at most the batch in flight. ``<out>/run.json`` keeps the settings that determine the
  maps; a rerun with different ones is refused (use another output folder).
* **Failures**: an item that cannot be read or explained is appended to
  ``<out>/records/failures.rank<r>.jsonl`` (``{"item": key, "error": message}``) and the run
  goes on; at the end ``<out>/failures.jsonl`` lists the items that are still failed. Failed
  items are tried again by a rerun.
* **Sharding**: launched with ``torchrun --nproc_per_node=N`` (or inside an initialised
  ``torch.distributed`` group), rank ``r`` of ``N`` takes items ``r, r + N, ...``, runs on
  ``cuda:<local rank>`` when CUDA is available (NCCL) or on the CPU (gloo), and writes its own
  files. Statistics are estimated once: rank 0 computes them and saves
  ``<out>/statistics.pt``; the other ranks wait on a barrier and load that file. Rank 0 merges
  ``results.json`` (dataset order), ``failures.jsonl`` and ``index.html`` at the end.
* **Speed**: ``batch_size`` images are explained together (the core's ``max_batch`` setting
  bounds the images per forward pass, hence memory); optional mixed precision
  (:func:`accelerated`: ``torch.autocast`` over the network's forward passes while the
  optimised parameters stay float32) and channels-last weights.

Each item's random seed is ``seed + item.index * K`` (its position in the full dataset listing;
K the ensemble size, 1 by default), so its map does not depend on the batch, the shard or the
resume point it ran in.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
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
from inputiba.data.folders import DatasetItem, list_dataset
from inputiba.data.io import (
    ImageSource,
    check_output_dir,
    output_stem,
    save_json,
    save_text,
)
from inputiba.models.resolve import resolve_model
from inputiba.report.gallery import write_gallery
from inputiba.workflows.distributed import (
    PRECISIONS,
    DistributedContext,
    accelerated,
)
from inputiba.workflows.explain import (
    DEFAULT_OUT_DIR,
    ExplainError,
    _make_explainer,
    load_and_explain,
    run_seed,
)
from inputiba.workflows.records import is_terminal
from inputiba.workflows.run_files import (
    RUN_KEYS,
    _append_jsonl,
    _check_run_settings,
    _complete,
    _records,
)
from inputiba.workflows.statistics import _obtain_statistics

__all__ = [
    "explain_dataset",
    "DatasetRunSummary",
    "DistributedContext",
    "accelerated",
    "PRECISIONS",
    "RUN_KEYS",
]


@dataclass
class DatasetRunSummary:
    """What a dataset run did (on rank 0: all ranks together; elsewhere: this rank).

    Attributes:
        total: items of the dataset (all shards).
        done: items explained by this run.
        skipped: items already complete from earlier runs.
        failed: items that failed in this run.
        seconds: wall time of the run.
        images_per_second: ``done / seconds of explaining``.
        world_size: processes.
        out_dir: the output folder.
    """

    total: int
    done: int
    skipped: int
    failed: int
    seconds: float
    images_per_second: float
    world_size: int
    out_dir: str

    def line(self) -> str:
        return (f"{self.done} done, {self.skipped} skipped (already complete), {self.failed} "
                f"failed of {self.total} images in {self.seconds:.1f} s "
                f"({self.images_per_second:.3f} images/s, {self.world_size} process"
                f"{'es' if self.world_size != 1 else ''})")


# --------------------------------------------------------------------------------------------
# torch.distributed


# --------------------------------------------------------------------------------------------
# mixed precision


# --------------------------------------------------------------------------------------------
# records


def _stem(item: DatasetItem, layout: str) -> str:
    """The output stem of an item: its key without the suffix (``flat``: ``/`` -> ``__``)."""
    key = item.key.rsplit(".", 1)[0] if "." in Path(item.key).name else item.key
    parts = [output_stem(part) for part in key.split("/")]  # names kept as they are
    return "/".join(parts) if layout == "class" else "__".join(parts)


# --------------------------------------------------------------------------------------------
# the run


def explain_dataset(
    dataset: str | os.PathLike[str] | Sequence[DatasetItem],
    model: str | nn.Module = "efficientnet-lite0",
    weights: str | os.PathLike[str] | None = None,
    layer: str | None = None,
    targets: str | int = "auto",
    split: str = "val",
    subset: str | os.PathLike[str] | Sequence[int | str] | None = None,
    class_index: str | os.PathLike[str] | None = None,
    estimation: str | os.PathLike[str] | None = None,
    statistics: LayerStatistics | str | os.PathLike[str] | None = None,
    estimation_samples: int | None = None,
    preset: str = DEFAULT_PRESET,
    options: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    device: str | None = None,
    seed: int | None = None,
    out_dir: str | os.PathLike[str] = DEFAULT_OUT_DIR,
    layout: str = "flat",
    precision: str = "fp32",
    channels_last: bool = False,
    gallery: bool = True,
    gallery_limit: int | None = 200,
    preprocess: Callable[[Any], torch.Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    progress: bool = True,
) -> DatasetRunSummary:
    """Explain every image of a dataset; resumable, fault-tolerant, sharded under torchrun.

    Args:
        dataset: a dataset folder (see :func:`inputiba.data.folders.list_dataset`) or items.
        model: as in :func:`inputiba.workflows.explain.explain_images`.
        weights: as there.
        layer: as there.
        targets: ``"auto"`` (the item's folder class in an ImageNet layout, else the predicted
            class), ``"folder"`` (the folder class; an error where unknown), ``"predicted"``,
            or one class index or name for all items.
        split: passed to :func:`~inputiba.data.folders.list_dataset`.
        subset: passed to :func:`~inputiba.data.folders.list_dataset`.
        class_index: passed to :func:`~inputiba.data.folders.list_dataset`.
        estimation: as in :func:`inputiba.workflows.explain.explain_images`.
        statistics: ready statistics (object or file); else estimated once (rank 0) from
            ``estimation`` and saved as ``<out>/statistics.pt``, which a resumed run reuses.
        estimation_samples: as in :func:`inputiba.workflows.explain.explain_images`.
        preset: as there.
        options: as there.
        batch_size: images explained together per process.
        device: ``"cpu"``, ``"cuda"`` (under torchrun: ``cuda:<local rank>``); default CUDA
            when available.
        seed: item ``i`` of the full listing uses seed ``seed + i * K`` (ensemble K; default:
            ``options["seed"]`` when given, else 0).
        out_dir: the output folder (see the module docstring for its files).
        layout: ``"flat"`` (outputs ``<out>/<class>__<stem>.npy``...) or ``"class"``
            (``<out>/<class>/<stem>.npy``...).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :func:`accelerated`).
        channels_last: channels-last weights (faster convolutions on recent GPUs).
        gallery: write ``index.html`` with thumbnails at the end (rank 0).
        gallery_limit: the gallery shows every failed item and at most this many explained ones
            (its thumbnails are embedded in the page; ``None``: all). ``results.json`` always
            lists every item.
        preprocess: as in :func:`inputiba.workflows.explain.explain_images`.
        class_names: as there.
        progress: a progress bar (rank 0) and a summary line on stderr.

    Returns:
        :class:`DatasetRunSummary` (totals over all ranks on rank 0).

    Raises:
        ExplainError: a problem with the run as a whole (model, layer, settings that differ from
            the run already in ``out_dir``, ...).
    """
    t_start = time.perf_counter()
    if batch_size < 1:
        raise ExplainError(f"batch size must be at least 1, got {batch_size}")
    if layout not in ("flat", "class"):
        raise ExplainError(f"layout must be 'flat' or 'class', not {layout!r}")
    if precision not in PRECISIONS:
        raise ExplainError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if isinstance(dataset, (str, os.PathLike)):
        try:
            items = list_dataset(dataset, split, subset, class_index)
        except (FileNotFoundError, ValueError) as exc:
            raise ExplainError(str(exc)) from None
        dataset_label = str(Path(dataset).resolve())
    else:
        items = list(dataset)
        dataset_label = "items"
    if not items:
        raise ExplainError("The dataset has no items")

    options = dict(options or {})
    seed = run_seed(seed, options)
    check_output_dir(out_dir)
    ctx = DistributedContext.from_environment(device)
    finished = False
    try:
        result = _run(ctx, items, dataset_label, t_start, model=model, weights=weights,
                    layer=layer, targets=targets, estimation=estimation, statistics=statistics,
                    estimation_samples=estimation_samples, preset=preset,
                    options=options, batch_size=batch_size, device=device,
                    seed=seed, out=Path(out_dir), layout=layout, precision=precision,
                    channels_last=channels_last, gallery=gallery and gallery_limit != 0,
                    gallery_limit=gallery_limit, preprocess=preprocess,
                    class_names=class_names, progress=progress)
        finished = True
        return result
    finally:
        ctx.close(wait=finished)


def _targets_per_item(items: Sequence[DatasetItem], targets: Any,
                      rm: Any) -> dict[int, int | None]:
    """``item index -> class`` (``None``: the prediction) for ``targets`` = a class for all,
    ``"predicted"``, ``"folder"`` (the ImageNet folder's class) or ``"auto"`` (folder, else
    predicted)."""
    fixed = None
    if targets not in ("auto", "folder", "predicted"):
        fixed = resolve_target(targets, rm.class_names, rm.num_classes)
    target_of: dict[int, int | None] = {}
    for it in items:
        if fixed is not None:
            target_of[it.index] = fixed
        elif targets == "predicted":
            target_of[it.index] = None
        else:
            if it.label is None and targets == "folder":
                raise ExplainError(f"{it.path}: no folder class (targets='folder' needs an "
                                   "ImageNet layout with imagenet_class_index.json)")
            if it.label is not None and not 0 <= it.label < rm.num_classes:
                raise ExplainError(f"{it.path}: folder class {it.label} is out of range for a "
                                   f"model with {rm.num_classes} classes")
            target_of[it.index] = it.label
    return target_of


def _shared_statistics(ctx: DistributedContext, out: Path, rm: Any, layer: str, statistics: Any,
                       estimation: Any, estimation_samples: int | None, dev: str, seed: int,
                       live: bool, run_settings: dict[str, Any]) -> tuple[Any, Any]:
    """The layer statistics, computed once on rank 0 and kept in the output folder for the
    other ranks and for reruns; rank 0 also writes ``run.json``."""
    main_rank = ctx.rank == 0
    stats_file = out / "statistics.pt"
    if statistics is not None:
        stats, stats_info = _obtain_statistics(rm, layer, None, statistics, estimation_samples,
                                               dev, seed, live)
    else:
        if main_rank:
            out.mkdir(parents=True, exist_ok=True)
            save_json(out / "run.json", {**run_settings, "inputiba": __version__})
            if stats_file.is_file():
                stats, stats_info = _obtain_statistics(rm, layer, None, stats_file, None, dev,
                                                       seed, live)
            else:
                stats, stats_info = _obtain_statistics(rm, layer, estimation, None,
                                                       estimation_samples, dev, seed, live)
                stats.save(stats_file, model=rm.name, layer=layer,
                           source=stats_info.get("source"))
        ctx.barrier()
        if not main_rank:
            stats, stats_info = _obtain_statistics(rm, layer, None, stats_file, None, dev, seed,
                                                   False)
    if statistics is not None and main_rank:
        out.mkdir(parents=True, exist_ok=True)
        save_json(out / "run.json", {**run_settings, "inputiba": __version__})
    return stats, stats_info


def _summary(ctx: DistributedContext, counts: list[dict[str, Any]], total: int, t_start: float,
             out: Path, progress: bool, mine: tuple[int, int, int, float]) -> DatasetRunSummary:
    """The run's summary: over all ranks on rank 0 (written to ``summary.json``), this rank's
    own counts elsewhere."""
    done, skipped, failed, explain_seconds = mine
    seconds = round(time.perf_counter() - t_start, 3)
    if ctx.rank != 0:
        return DatasetRunSummary(
            total=total, done=done, skipped=skipped, failed=failed, seconds=seconds,
            images_per_second=round(done / explain_seconds, 4) if explain_seconds else 0.0,
            world_size=ctx.world_size, out_dir=str(out))
    total_done = sum(c["done"] for c in counts)
    busy = max(c["seconds"] for c in counts)
    summary = DatasetRunSummary(
        total=total, done=total_done, skipped=sum(c["skipped"] for c in counts),
        failed=sum(c["failed"] for c in counts), seconds=seconds,
        images_per_second=round(total_done / busy, 4) if busy > 0 else 0.0,
        world_size=ctx.world_size, out_dir=str(out))
    save_json(out / "summary.json", asdict(summary))
    if progress:
        print(f"inputiba: {summary.line()} -> {out}", file=sys.stderr)
    return summary


def _run(ctx: DistributedContext, items: list[DatasetItem], dataset_label: str,
         t_start: float, *, model: Any, weights: Any, layer: str | None, targets: Any,
         estimation: Any, statistics: Any, estimation_samples: int | None, preset: str,
         options: dict[str, Any], batch_size: int, device: str | None, seed: int, out: Path,
         layout: str, precision: str, channels_last: bool, gallery: bool,
         gallery_limit: int | None, preprocess: Any,
         class_names: Any, progress: bool) -> DatasetRunSummary:
    main_rank = ctx.rank == 0
    show = progress and main_rank
    live = show and is_terminal(sys.stderr)  # a bar where it redraws; else lines (see below)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ExplainError(f"Device {dev!r} requested but CUDA is not available")
        if ctx.active and dev == "cuda":
            dev = f"cuda:{ctx.local_rank}"
    torch.manual_seed(seed)

    rm = resolve_model(model, weights, preprocess, class_names, dev)
    if layer is None:
        from inputiba.models.image import default_layer

        layer = default_layer(rm.name) if isinstance(model, str) else None
        if layer is None:
            raise ExplainError(f"No default layer known for model {rm.name!r}; pass one")
    try:
        get_layer(rm.model, layer)
    except LayerNotFoundError as exc:
        raise ExplainError(str(exc)) from None
    target_of = _targets_per_item(items, targets, rm)
    explainer = _make_explainer(rm, layer, preset, options, progress=False)
    run_settings: dict[str, Any] = {
        "model": rm.name, "weights": None if weights is None else str(weights), "layer": layer,
        "preset": preset, "options": options, "seed": seed, "targets": targets,
        "layout": layout, "precision": precision, "input_size": list(rm.input_size),
        "dataset": dataset_label,
        "statistics": str(statistics) if isinstance(statistics, (str, os.PathLike))
        else ("given" if statistics is not None else str(estimation)),
    }
    # every rank compares with the folder's run.json before rank 0 (re)writes it
    _check_run_settings(out, run_settings)
    ctx.barrier()

    stats, stats_info = _shared_statistics(ctx, out, rm, layer, statistics, estimation,
                                           estimation_samples, dev, seed, live,
                                           run_settings)
    explainer.statistics = stats

    settings = {
        "model": rm.name, "weights": run_settings["weights"], "layer": layer, "preset": preset,
        "options": options, "batch_size": batch_size, "device": dev, "seed": seed,
        "input_size": list(rm.input_size), "statistics": stats_info, "precision": precision,
        "channels_last": channels_last, "method": "inputiba", "inputiba": __version__,
    }

    # what earlier runs completed (any rank, any world size)
    complete = {r["item"] for r in _records(out) if "item" in r and _complete(out, r)}
    shard = items[ctx.rank::ctx.world_size]
    todo = [it for it in shard if it.key not in complete]
    skipped = len(shard) - len(todo)
    records_file = out / "records" / f"rank{ctx.rank}.jsonl"
    failures_file = out / "records" / f"failures.rank{ctx.rank}.jsonl"

    def report(msg: str) -> None:
        text = f"inputiba: {'' if not ctx.active else f'[rank {ctx.rank}] '}{msg}"
        if show:
            tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    sources = {it.index: ImageSource(name=_stem(it, layout), path=it.path) for it in items}
    done = failed = 0
    explain_seconds = 0.0
    bar = tqdm(total=len(items), initial=skipped * ctx.world_size, desc="explain", unit="image",
               disable=not live)
    every = max(1, len(shard) // 100)  # not a terminal: a line per 1% (at least per image)
    next_line = every
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            t0 = time.perf_counter()
            records: dict[int, dict[str, Any]] = {}
            load_and_explain([it.index for it in chunk], sources, rm, explainer, target_of,
                             records, settings, out, dev, seed, report,
                             accelerated(explainer, precision, dev, channels_last))
            explain_seconds += time.perf_counter() - t0
            ok_rows, fail_rows = [], []
            for it in chunk:
                rec = {**records[it.index], "item": it.key, "index": it.index,
                       "label": it.label, "rank": ctx.rank}
                if rec["status"] == "ok":
                    ok_rows.append(rec)
                else:
                    fail_rows.append(rec)
            _append_jsonl(records_file, ok_rows + fail_rows)
            _append_jsonl(failures_file, [{"item": r["item"], "error": r["error"]}
                                          for r in fail_rows])
            done += len(ok_rows)
            failed += len(fail_rows)
            bar.update(len(chunk) * ctx.world_size)
            finished = skipped + start + len(chunk)
            if show and not live and (finished >= next_line or finished == len(shard)):
                next_line = finished + every
                report(f"[{finished}/{len(shard)}] explained {done} (failed {failed}, "
                       f"done earlier {skipped}), {time.perf_counter() - t_start:.0f} s")
    bar.close()

    counts = ctx.gather({"done": done, "skipped": skipped, "failed": failed,
                         "seconds": explain_seconds})
    ctx.barrier()
    if main_rank:
        _merge(out, items, gallery, gallery_limit, f"model {rm.name}, layer {layer}, preset {preset}")
    ctx.barrier()
    return _summary(ctx, counts, len(items), t_start, out, progress,
                    (done, skipped, failed, explain_seconds))


def _merge(out: Path, items: list[DatasetItem], gallery: bool, gallery_limit: int | None,
           subtitle: str) -> None:
    """results.json (dataset order, latest record per item, ``ok`` preferred) and
    failures.jsonl (items still failed) from every rank's records."""
    latest: dict[str, dict[str, Any]] = {}
    for rec in _records(out):
        key = rec.get("item")
        if key is None:
            continue
        if rec.get("status") == "ok" or latest.get(key, {}).get("status") != "ok":
            latest[key] = rec
    ordered = [latest[it.key] for it in items if it.key in latest]
    save_json(out / "results.json", ordered)
    still = [{"item": r["item"], "error": r.get("error")} for r in ordered
             if r.get("status") != "ok"]
    save_text(out / "failures.jsonl",
              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in still))
    if gallery:
        shown, n_ok = [], 0
        for r in ordered:
            if r.get("status") != "ok":
                shown.append(r)
            elif gallery_limit is None or n_ok < gallery_limit:
                shown.append(r)
                n_ok += 1
        if len(shown) < len(ordered):
            subtitle += (f"; showing {len(shown)} of {len(ordered)} images (all failed ones), "
                         "every image is in results.json")
        write_gallery(out, shown, subtitle=subtitle)
