"""One chunk of images explained as a batch and each image's files written as a group: the maps
resized back to the image, the overlay and thumbnails, the record (:func:`_explain_chunk`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inputiba.core.functional import resize_map
from inputiba.core.rng import run_base_seeds
from inputiba.data.io import (
    ImageSource,
    bound_image,
    file_group,
    save_npy,
)
from inputiba.errors import ModelError
from inputiba.models.resolve import (
    ResolvedModel,
    _one_line,
)
from inputiba.report.gallery import write_thumbnails
from inputiba.report.visualize import save_overlay
from inputiba.workflows.records import (
    RECORD_KEYS,
    _failed_record,
    _final_losses,
)

#: The longer side of the copy of an image that its overlay and thumbnails are drawn from.
DISPLAY_SIDE = 1400


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
        members = getattr(getattr(explainer, "config", None), "ensemble", 1)
        res = explainer.attribute(x, target=targets, seed=run_base_seeds(seed, idx, members),
                                  return_details=True)
    except ModelError:
        raise  # the model and layer cannot work for any image: the run stops at the first batch
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
    # without stage 2 (gan_epochs 0, e.g. the default consensus) the "GAN mask" is stage 3's
    # prior as initialised: the gallery must not call it a trained GAN's mask
    gan_epochs = getattr(getattr(res, "config", None), "gan_epochs", None)
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
            gan_trained=None if gan_epochs is None else gan_epochs > 0,
            working_size=None if item.working_size is None else list(item.working_size),
            warnings=list(item.notes),
        )
        records[i] = rec
