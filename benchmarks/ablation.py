"""What each stage of InputIBA buys: an ablation on EfficientNet-Lite0 (``_blocks.5``).

Variants (all the paper's settings unless named; ``fast`` is the ``fast`` preset):

* ``paper`` / ``fast``: the full method (stage 1, the WGAN, stage 3);
* ``*-nogan``: ``gan_epochs=0``: stage 2 skipped, stage 3 with the GAN's *initial* mask (the
  stage-1 capacity in bits per pixel) as prior;
* ``*-uniform``: no GAN, stage 3 with a uniform prior 0.5;
* ``*-s1prior``: no GAN, stage 3 with the stage-1 capacity normalised per image to [0, 1]
  (clamped to [0.05, 0.95]) as prior (``gan_theta_init="normalized"``, ``gan_epochs=0``):
  what the GAN's mask is meant to be;
* ``*-gantrain``: a WGAN that trains. The original generator cannot move: its mask logits
  start at the capacity in bits (<= 0.1, so the mask is 0.50-0.53 everywhere), the paper
  settings give it 40 RMSprop steps at lr 0.003 (at most ~0.1 logit each way), and its "real"
  samples weight R by the capacity in nats (~0-0.07), so they are mostly noise of random means
  and scales, which a mask does not have to match. Here: real samples are the stage-1
  bottleneck Z* (``gan_real="lambda"``), the mask starts at the normalised stage-1 capacity
  (``gan_theta_init="normalized"``), the generator steps on every batch
  (``gan_critic_iters=1``) at ``gan_lr_theta=0.1`` (RMSprop's step is about lr per step when
  the gradient's sign holds, so 35 steps can cross the +-3 logits of the initial mask);
  under ``paper`` 5 epochs (35 generator steps, about half the network passes of ``paper``'s
  stage 2);
* ``iba``: stage 1 alone (the paper's stage-1 settings), upsampled;
* ``*-avgN``: ``input_average=N``: stage 3's map is the mean lambda of its last N steps;
* ``*-sigF``, ``*-stepsN``, ``*-drawsN``, ``*-lrF``: stage 3's ``input_sigma`` (smoothing of
  the mask, pixels), ``input_steps``, ``input_draws``, ``input_lr``;
* ``*-cos``, ``*-warm``: stage 3's ``input_lr_schedule`` ``"cosine"`` or ``"warmup"``;
* ``*-xK``: ``attribute(..., ensemble=K)``: the mean of K maps with independent seeds;
* ``*-xK<reduction>`` (``mean``, ``median``, ``min``, ``gmean``, ``hmean``, ``second``): the K
  maps of ``*-xK`` reduced pixel by pixel: their mean (``*-xK``'s maps, which equal the mean of
  their members'), median, minimum (what every run keeps), geometric or harmonic mean (of
  map + 0.001, minus 0.001) or second-smallest value (what every run but one keeps);
  the members are the runs of the variant without ``-xK...`` at seeds ``base + k`` (the
  ensemble's seeds; cached under that variant's name, so the reductions share them), and the
  seconds per map are the sum of the members' (run in batches of ``--seeds`` x K);
* ``*-share-xK[mean|median|min]``: an ensemble whose K runs share one stage-1 run
  (``ensemble_shared_stage1``), run as one batch of ``--seeds`` x K rows and reduced by the
  library (``ensemble_reduce``); its seconds per map are the batch's time / ``--seeds``;
* a preset's name (for example ``stable``): that preset as it is.

Data: the built-in localisation set (photos with boxes) first, then the built-in photos;
the class is the boxed class the model rates highest, else the prediction; photos whose
target probability is below 0.1 are left out. Statistics: the built-in stand-in (cached).
Each photo is explained with ``--seeds`` seeds (all seeds of one photo in one batch).

Scores (:mod:`inputiba.metrics`): deletion and insertion AUC (blurred baseline, ``--step`` of
the pixels a step), and on photos whose class has boxes: mass in box, pointing game, effective
heat ratio. Per variant: mean and spread (std) over photo x seed pairs; the PAIRED difference
to ``--reference`` over the same pairs with a 95% bootstrap interval (resampling the pairs);
the Pearson correlation of maps between seeds of one photo (between independent ensembles
for ``-xK``) and with the reference's map of the same photo and seed; seconds per map (wall
time of the batched call / maps; noisy on a shared machine). For variants that run the GAN,
how far its mask moved from its initial mask.

``--plot PNG`` draws the trade-off the table shows: per variant, the seed correlation against
the paired deletion-AUC difference to the reference (with its interval), marking the variants
that take at most half the reference's seconds per map, and the corner aimed
at (correlation >= 0.85, deletion no worse).

``--maps PNG`` shows the maps themselves: one row per photo (the first ``--maps-photos``), the
photo and then each variant's maps at the first two seeds side by side, laid over the photo,
each pair titled with its Pearson correlation: how much of a map is the seed's.

Maps are cached in ``--cache`` (one ``.npz`` per variant, photo and seed), so a run can be
extended (more variants, photos or seeds) without recomputing.

    python benchmarks/ablation.py --quick                      # smoke run, ~2 min
    python benchmarks/ablation.py                              # the README's table, ~100 min
    python benchmarks/ablation.py --photos 4 --seeds 3 --variants fast fast-nogan-x4 \\
        --reference fast --json ablation.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from inputiba import IBA, InputIBA
from inputiba.core.config import ENSEMBLE_REDUCTIONS
from inputiba.core.functional import normalized_logits, reduce_members
from inputiba.data.assets import BUILTIN_PHOTO_NAMES, builtin_photos
from inputiba.data.datasets import load_localization_set, scale_boxes
from inputiba.metrics import Deletion, EffectiveHeatRatio, Insertion, MassInBox, PointingGame
from inputiba.modalities import image as image_mod
from inputiba.workflows.explain import _obtain_statistics, _prepare, resolve_model

LAYER = "_blocks.5"
MODEL = "efficientnet-lite0"


@dataclass(frozen=True)
class Variant:
    """One configuration: a preset with overrides, a prior, an ensemble size, or IBA."""

    preset: str = "paper"
    overrides: dict[str, Any] = field(default_factory=dict)
    prior: str | None = None  # None: the GAN's (initial) mask; "uniform": 0.5 everywhere
    ensemble: int | None = None  # None: the preset's (a preset's name runs as the preset is)
    iba: bool = False
    reduce: str = ""  # "": the batched ensemble's mean; else how its members' maps become one
    members_of: str = ""  # with a reduce: the variant whose runs are the members


def _gmean(maps: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    return np.exp(np.log(maps + eps).mean(0)) - eps


def _hmean(maps: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    return 1.0 / (1.0 / (maps + eps)).mean(0) - eps


def _second(maps: np.ndarray) -> np.ndarray:
    """The second-smallest value: what every run but one keeps."""
    return np.sort(maps, axis=0)[1]


def _library_reduction(how: str) -> Any:
    """``ensemble_reduce=how`` as the explainers apply it, on K maps (K, H, W)."""
    return lambda maps: reduce_members(torch.from_numpy(maps), len(maps), how)[0].numpy()


#: ``-xK<name>``: how K maps (K, H, W) in [0, 1] become one, pixel by pixel: the library's
#: ``ensemble_reduce`` choices, and the geometric and harmonic means and the second-smallest
#: value (screened here only).
REDUCTIONS: dict[str, Any] = {**{how: _library_reduction(how) for how in ENSEMBLE_REDUCTIONS},
                              "gmean": _gmean, "hmean": _hmean, "second": _second}


#: ``-gantrain``: a WGAN that trains (see the module docstring).
GANTRAIN: dict[str, Any] = {"gan_real": "lambda", "gan_theta_init": "normalized",
                            "gan_critic_iters": 1, "gan_lr_theta": 0.1}


#: ``-<prefix><value>`` modifiers that set one stage-3 setting.
SETTING_MODIFIERS: dict[str, tuple[str, type]] = {
    "avg": ("input_average", int), "sig": ("input_sigma", float),
    "steps": ("input_steps", int), "draws": ("input_draws", int), "lr": ("input_lr", float),
}


def _setting_modifier(m: str) -> tuple[str, Any] | None:
    """``(setting, value)`` for a modifier of :data:`SETTING_MODIFIERS`, else None."""
    for prefix, (key, kind) in SETTING_MODIFIERS.items():
        rest = m[len(prefix):]
        if m.startswith(prefix) and (rest.isdigit() if kind is int else _non_negative(rest)):
            return key, kind(rest)
    return None


def _non_negative(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


def parse_variant(name: str) -> Variant:
    """``<paper|fast>[-nogan|-uniform|-s1prior|-gantrain][-avgN][-sigF][-stepsN][-drawsN]``
    ``[-lrF][-cos|-warm][-share][-xK[mean|median|min|gmean|hmean|second]]``, ``iba``, or a
    preset.

    ``-avgN``: ``input_average=N``; ``-sigF``/``-stepsN``/``-drawsN``/``-lrF``: ``input_sigma``,
    ``input_steps``, ``input_draws``, ``input_lr``; ``-cos``/``-warm``: ``input_lr_schedule``
    ``"cosine"``/``"warmup"``; ``-xK``: ``ensemble=K``; ``-share``: the ensemble's runs share
    one stage-1 run (``ensemble_shared_stage1``; ``-xK<reduction>`` is then the library's
    batched ``ensemble_reduce``, not a reduction of separate runs). Any other name must be a preset
    (run as it is, for example the recommended one).
    """
    if name == "iba":
        return Variant("paper", iba=True)
    from inputiba.core.config import PRESETS

    base, *mods = name.split("-")
    if base not in ("paper", "fast"):
        if name in PRESETS:
            return Variant(name)
        raise argparse.ArgumentTypeError(f"unknown variant {name!r}")
    over: dict[str, Any] = {}
    prior, k, reduce = None, None, ""
    for m in mods:
        if m == "nogan":
            over["gan_epochs"] = 0
        elif m == "uniform":
            over["gan_epochs"], prior = 0, "uniform"
        elif m == "s1prior":  # the generator's normalised initial mask, untrained
            over.update(gan_epochs=0, gan_theta_init="normalized")
        elif m == "gantrain":
            over.update(GANTRAIN)
            if base == "paper":
                over["gan_epochs"] = 5  # a generator step per batch: 35 steps
        elif m == "cos":  # stage 3's learning rate annealed to 0 along a half cosine
            over["input_lr_schedule"] = "cosine"
        elif m == "warm":  # stage 3's learning rate ramped up over its first sixth
            over["input_lr_schedule"] = "warmup"
        elif m == "share":  # an ensemble's runs share one stage-1 run
            over["ensemble_shared_stage1"] = True
        elif (setting := _setting_modifier(m)) is not None:
            over[setting[0]] = setting[1]
        elif ens := re.fullmatch(rf"x(\d+)({'|'.join(REDUCTIONS)})?", m):
            k, reduce = int(ens[1]), ens[2] or ""
        elif name in PRESETS:
            return Variant(name)
        else:
            raise argparse.ArgumentTypeError(f"unknown variant {name!r} (modifier {m!r})")
    if over.get("ensemble_shared_stage1"):
        if reduce not in ("", *ENSEMBLE_REDUCTIONS):
            raise argparse.ArgumentTypeError(f"-share runs the library's ensemble: {name!r} "
                                             f"needs a reduction of {ENSEMBLE_REDUCTIONS}")
        if not k:
            raise argparse.ArgumentTypeError(f"-share needs an ensemble (-xK): {name!r}")
        over["ensemble_reduce"] = reduce or "mean"
        return Variant(base, over, prior=prior, ensemble=k)
    if reduce:
        return Variant(base, over, prior=prior, ensemble=k, reduce=reduce,
                       members_of=name.rsplit("-", 1)[0])
    return Variant(base, over, prior=prior, ensemble=k)


class _Variants(dict):  # type: ignore[type-arg]
    def __missing__(self, name: str) -> Variant:
        self[name] = parse_variant(name)
        return self[name]


VARIANTS: dict[str, Variant] = _Variants()
DEFAULT_VARIANTS = ["paper", "paper-nogan", "paper-uniform", "iba", "fast", "fast-nogan",
                    "fast-s1prior", "fast-s1prior-x6", "paper-gantrain", "fast-nogan-x6"]
QUICK_VARIANTS = ["fast", "fast-nogan", "fast-uniform", "iba", "fast-nogan-x2"]


@contextlib.contextmanager
def _prior(kind: str | None) -> Iterator[None]:
    """Replace the image adapter's initial GAN mask (the prior when ``gan_epochs=0``) by 0.5
    (``kind="uniform"``; the normalised stage-1 prior is the setting ``gan_theta_init``)."""
    if kind is None:
        yield
        return
    original = image_mod.ImageStages.theta_init

    def theta_init(self: image_mod.ImageStages, feature: Any) -> torch.Tensor:
        return torch.zeros_like(self.inputs)

    image_mod.ImageStages.theta_init = theta_init  # type: ignore[method-assign]
    try:
        yield
    finally:
        image_mod.ImageStages.theta_init = original  # type: ignore[method-assign]


@dataclass
class Photo:
    name: str
    x: torch.Tensor  # (1, 3, 224, 224) normalised
    target: int
    probability: float
    boxes: np.ndarray | None  # (k, 4) in the 224 x 224 map's pixels, or None
    image: np.ndarray | None = None  # (224, 224, 3) uint8, what x shows (for --maps)


def load_photos(rm: Any, limit: int | None, min_probability: float = 0.1) -> list[Photo]:
    """The localisation set (with boxes) then the built-in photos, filtered by probability."""
    items: list[tuple[str, np.ndarray, Any]] = [(s.name, s.image, s)
                                                for s in load_localization_set()]
    items += [(n, img, None) for n, img in builtin_photos(BUILTIN_PHOTO_NAMES).items()]
    out = []
    for name, img, sample in items:
        x = _prepare(rm.preprocess, img, rm.input_size)[None]
        with torch.no_grad():
            probs = torch.softmax(rm.model(x).float(), 1)[0]
        ids = sample.imagenet_ids if sample is not None else []
        target = max(ids, key=lambda c: probs[c].item()) if ids else int(probs.argmax())
        p = float(probs[target])
        if p < min_probability:
            continue
        boxes = None
        if sample is not None and len(sample.boxes_for(target)):
            boxes = scale_boxes(sample.boxes_for(target), img.shape[:2], rm.input_size)
        shown = np.asarray(Image.fromarray(img).convert("RGB").resize(rm.input_size[::-1]))
        out.append(Photo(name, x, target, p, boxes, shown))
    return out[:limit] if limit else out


def seed_of(j: int) -> int:
    """Base seed of seed index ``j`` (ensembles use base + k, k < 100: no overlaps)."""
    return 100 * j


def compute(rm: Any, stats: Any, name: str, photo: Photo, seeds: int, cache: Path
            ) -> list[dict[str, Any]]:
    """Maps (and GAN mask movement) of one variant on one photo for seed indices 0..seeds-1."""
    v = VARIANTS[name]
    if not v.reduce:
        return _runs(rm, stats, name, photo, [seed_of(j) for j in range(seeds)], cache)
    k = int(v.ensemble or 1)
    runs = _runs(rm, stats, v.members_of, photo,
                 [seed_of(j) + i for j in range(seeds) for i in range(k)], cache)
    return [{"map": REDUCTIONS[v.reduce](np.stack([r["map"] for r in runs[j * k:(j + 1) * k]])),
             "seconds": sum(r["seconds"] for r in runs[j * k:(j + 1) * k])}
            for j in range(seeds)]


def _runs(rm: Any, stats: Any, name: str, photo: Photo, seed_list: list[int], cache: Path
          ) -> list[dict[str, Any]]:
    """Maps of one variant on one photo at these base seeds (missing ones in one batch)."""
    v = VARIANTS[name]
    files = [cache / f"{name}__{photo.name}__{s}.npz" for s in seed_list]
    todo = [j for j, f in enumerate(files) if not f.exists()]
    if todo:
        x = photo.x.expand(len(todo), -1, -1, -1).contiguous()
        seeds_todo = [seed_list[j] for j in todo]
        t0 = time.perf_counter()
        moved: list[dict[str, float]] = [{} for _ in todo]
        if v.iba:
            cfg = InputIBA(rm.model, LAYER, stats, preset=v.preset, **v.overrides).config
            iba = IBA(rm.model, LAYER, stats, beta=cfg.feat_beta, steps=cfg.feat_steps,
                      lr=cfg.feat_lr, draws=cfg.feat_draws, sigma=cfg.feat_sigma)
            maps = iba.attribute(x, photo.target, seed=seeds_todo)
        else:
            ex = InputIBA(rm.model, LAYER, stats, preset=v.preset, **v.overrides)
            with _prior(v.prior):
                res = ex.attribute(x, photo.target, seed=seeds_todo, ensemble=v.ensemble,
                                   return_details=True)
            maps = res.attribution
            if ex.config.gan_epochs > 0:
                init = res.feature_map
                if ex.config.gan_theta_init == "normalized":
                    init = normalized_logits(init)
                init = torch.sigmoid(init)
                for i in range(len(todo)):
                    a, b = res.gan_mask[i].flatten(), init[i].flatten()
                    moved[i] = {"gan_moved": float((a - b).abs().mean()),
                                "gan_corr_init": float(torch.corrcoef(torch.stack([a, b]))[0, 1]),
                                "gan_min": float(a.min()), "gan_max": float(a.max())}
        per_map = (time.perf_counter() - t0) / len(todo)
        for i, j in enumerate(todo):
            np.savez(files[j], map=maps[i, 0].detach().cpu().numpy().astype(np.float32),
                     seconds=per_map, **moved[i])
    out = []
    for f in files:
        with np.load(f) as d:
            out.append({k: (d[k] if k == "map" else float(d[k])) for k in d.files})
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def score(rm: Any, photo: Photo, maps: list[np.ndarray], step: float) -> list[dict[str, float]]:
    """Per map: deletion/insertion AUC, and box metrics where the photo's class has boxes."""
    n = len(maps)
    x = photo.x.expand(n, -1, -1, -1)
    t = [photo.target] * n
    m = torch.as_tensor(np.stack(maps))
    rows: list[dict[str, float]] = [{} for _ in range(n)]
    for key, metric in (("deletion", Deletion(rm.model, step=step, keep_curves=False)),
                        ("insertion", Insertion(rm.model, step=step, keep_curves=False))):
        res = metric.update(x, t, m)
        for i in range(n):
            rows[i][key] = float(res.auc[i])
    if photo.boxes is not None:
        for metric, keys in ((MassInBox(), ("mass_in_box",)), (PointingGame(), ("hit",)),
                             (EffectiveHeatRatio(), ("ehr",))):
            vals = metric.update(list(maps), [photo.boxes] * n)
            for i, val in enumerate(vals):
                if val is not None:
                    for k in keys:
                        rows[i][k] = val[k]
    return rows


def bootstrap_ci(d: np.ndarray, reps: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``d`` (resampling its entries)."""
    if len(d) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (reps, len(d)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


METRIC_KEYS = (("deletion", "deletion AUC ↓"), ("insertion", "insertion AUC ↑"),
               ("mass_in_box", "mass in box ↑"), ("hit", "pointing ↑"), ("ehr", "EHR ↑"))


def summarise(results: dict[str, dict[tuple[str, int], dict[str, Any]]], reference: str
              ) -> dict[str, Any]:
    """Per variant: mean/std/n per metric, paired differences to ``reference``, correlations,
    seconds per map, GAN movement."""
    out: dict[str, Any] = {}
    ref = results.get(reference, {})
    for name, rows in results.items():
        s: dict[str, Any] = {}
        for key, _title in METRIC_KEYS:
            vals = np.array([r[key] for r in rows.values() if key in r])
            s[key] = {"mean": float(vals.mean()) if len(vals) else float("nan"),
                      "std": float(vals.std()) if len(vals) else float("nan"), "n": len(vals)}
            if name != reference and ref:
                pairs = [(r[key], ref[p][key]) for p, r in rows.items()
                         if key in r and p in ref and key in ref[p]]
                d = np.array([a - b for a, b in pairs])
                if len(d):
                    lo, hi = bootstrap_ci(d)
                    s[key]["paired_diff"] = {"mean": float(d.mean()), "ci95": [lo, hi],
                                             "n": len(d)}
        photos = sorted({p for p, _ in rows})
        corr = [pearson(rows[(p, a)]["map"], rows[(p, b)]["map"]) for p in photos
                for a, b in itertools.combinations(sorted(j for q, j in rows if q == p), 2)]
        s["seed_corr"] = float(np.nanmean(corr)) if corr else float("nan")
        if name != reference and ref:
            rc = [pearson(r["map"], ref[p]["map"]) for p, r in rows.items() if p in ref]
            s["corr_with_reference"] = float(np.nanmean(rc)) if rc else float("nan")
        s["seconds_per_map"] = float(np.mean([r["seconds"] for r in rows.values()]))
        if any("gan_moved" in r for r in rows.values()):
            for k in ("gan_moved", "gan_corr_init", "gan_min", "gan_max"):
                s[k] = float(np.mean([r[k] for r in rows.values() if k in r]))
        out[name] = s
    return out


def markdown(summary: dict[str, Any], reference: str, n_photos: int, seeds: int) -> str:
    def fmt(x: float, nd: int = 3) -> str:
        return "–" if x is None or not math.isfinite(x) else f"{x:.{nd}f}"

    head = ["variant"]
    for _k, title in METRIC_KEYS:
        head += [title, f"Δ vs {reference} [95% CI]"]
    head += ["seed corr", f"corr w/ {reference}", "s / map"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        row = [f"`{name}`"]
        for key, _title in METRIC_KEYS:
            m = s[key]
            row.append(f"{fmt(m['mean'])} ± {fmt(m['std'])}" if m["n"] else "–")
            pd = m.get("paired_diff")
            row.append(f"{pd['mean']:+.3f} [{pd['ci95'][0]:+.3f}, {pd['ci95'][1]:+.3f}]"
                       if pd and math.isfinite(pd["ci95"][0]) else "–")
        row += [fmt(s["seed_corr"], 2), fmt(s.get("corr_with_reference", float("nan")), 2),
                fmt(s["seconds_per_map"], 1)]
        lines.append("| " + " | ".join(row) + " |")
    gan = [f"`{n}`: mean |mask - initial mask| {s['gan_moved']:.4f}, correlation with the "
           f"initial mask {s['gan_corr_init']:.3f}, mask range {s['gan_min']:.2f}-"
           f"{s['gan_max']:.2f}" for n, s in summary.items() if "gan_moved" in s]
    note = (f"\n{n_photos} photos x {seeds} seeds; mean ± std over photo x seed pairs; Δ: "
            f"paired difference to `{reference}` (95% bootstrap interval over the pairs); box "
            "metrics on the photos whose class has boxes; seconds per map: wall time, noisy "
            "on a shared machine.\n")
    return "\n".join(lines) + note + ("\nGAN mask: " + "; ".join(gan) + "\n" if gan else "")


def plot_frontier(summary: dict[str, Any], reference: str, path: Path,
                  min_corr: float = 0.85) -> list[str]:
    """Seed correlation (x) against the paired deletion-AUC difference to ``reference`` (y, with
    its 95% interval) per variant; filled markers: at most half the reference's seconds per
    map. The shaded corner is correlation >= ``min_corr`` with deletion no worse (interval
    reaching 0 or below). Points are numbered; the key beside the plot names them
    (variants with the same point share a number: ``a = b``); returns the key's lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref_s = summary[reference]["seconds_per_map"]
    fig, ax = plt.subplots(figsize=(11, 6))
    points: dict[tuple[float, float], list[str]] = {}
    for name, s in summary.items():
        pd = s["deletion"].get("paired_diff", {"mean": 0.0, "ci95": [0.0, 0.0]})
        x, y = s["seed_corr"], pd["mean"]
        points.setdefault((round(x, 4), round(y, 5)), []).append(
            name.replace("paper-s1prior-", "s1-"))
        fast = s["seconds_per_map"] <= 0.5 * ref_s
        if name == reference:
            ax.plot(x, y, "*", color="k", ms=10)
        else:
            ax.errorbar(x, y, yerr=[[y - pd["ci95"][0]], [pd["ci95"][1] - y]], fmt="o",
                        color="tab:blue" if fast else "tab:gray",
                        mfc="tab:blue" if fast else "white", capsize=2, ms=6)
    lo_y, hi_y = ax.get_ylim()
    lo_x, hi_x = ax.get_xlim()
    hi_x = max(hi_x, min_corr + 0.02)
    ax.fill_between([min_corr, hi_x], lo_y, 0, color="tab:green", alpha=0.12,
                    label=f"aimed at: seed corr >= {min_corr}, deletion interval reaching "
                    "this band")
    ax.axhline(0, color="k", lw=0.6)
    ax.axvline(min_corr, color="tab:green", lw=0.8, ls="--")
    ax.set_xlim(lo_x, hi_x)
    ax.set_ylim(lo_y, hi_y)
    ax.set_xlabel("map correlation between independent seeds")
    ax.set_ylabel(f"deletion AUC − {reference}'s (paired, 95% interval; lower is better)")
    ax.plot([], [], "o", color="tab:blue", label=f"<= 1/2 of {reference}'s seconds per map")
    ax.plot([], [], "o", color="tab:gray", mfc="white", label="slower")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Seed agreement against deletion AUC (s1- = paper-s1prior-)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.68, 1))
    # each point numbered next to it; the key (number: variants) beside the axes
    key = []
    for i, ((x, y), names) in enumerate(sorted(points.items()), 1):
        ax.annotate(str(i), (x, y), xytext=(4, 2), textcoords="offset points", fontsize=8)
        key.append(f"{i:2d}  {' = '.join(names)}")
    fig.subplots_adjust(right=0.68)
    fig.text(0.70, 0.88, "\n".join(key), fontsize=8, va="top", family="monospace")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return key


def plot_maps(results: dict[str, dict[tuple[str, int], dict[str, Any]]], photos: list[Photo],
              path: Path) -> None:
    """One row per photo: the photo, then per variant its maps at seed indices 0 and 1 laid
    over the photo (colour scale 0..1), each pair titled with the pair's Pearson correlation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from inputiba.report.visualize import blend

    names = list(results)
    cols = 1 + 2 * len(names)
    fig, axes = plt.subplots(len(photos), cols, figsize=(1.6 * cols, 1.75 * len(photos)),
                             squeeze=False)
    for r, photo in enumerate(photos):
        axes[r, 0].imshow(photo.image)
        axes[r, 0].set_ylabel(photo.name, fontsize=7)
        for c, name in enumerate(names):
            a, b = (results[name][(photo.name, j)]["map"] for j in (0, 1))
            for k, m in enumerate((a, b)):
                ax = axes[r, 1 + 2 * c + k]
                ax.imshow(blend(photo.image, m, alpha=0.6))
                ax.set_title(f"{name}, seed {seed_of(k)}" if r == 0 else "", fontsize=6)
            axes[r, 1 + 2 * c].set_xlabel(f"r = {pearson(a, b):.2f}", fontsize=7,
                                         loc="right")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    fig.tight_layout(pad=0.3, w_pad=0.1, h_pad=0.4)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 photo, 2 seeds, fast variants, coarse curves (~2 min)")
    ap.add_argument("--photos", type=int, default=0, help="at most this many photos (0: all)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variants", nargs="*", default=None,
                    help=f"see parse_variant; default: {' '.join(DEFAULT_VARIANTS)}")
    ap.add_argument("--reference", default=None, help="paired differences to this variant "
                    "(default: paper if run, else the first)")
    ap.add_argument("--step", type=float, default=0.05, help="deletion/insertion step (fraction)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", type=Path, default=Path("ablation_cache"))
    ap.add_argument("--json", type=Path, default=Path("ablation.json"))
    ap.add_argument("--plot", type=Path, default=None,
                    help="write the seed-correlation / deletion trade-off figure (PNG) here")
    ap.add_argument("--maps", type=Path, default=None,
                    help="write the maps at the first two seeds, per photo and variant (PNG)")
    ap.add_argument("--maps-photos", type=int, default=4, help="photos (rows) of --maps")
    args = ap.parse_args()
    if args.quick:
        args.photos, args.seeds, args.step = 1, 2, 0.2
        args.variants = args.variants or QUICK_VARIANTS
    variants = args.variants or DEFAULT_VARIANTS
    for name in variants:
        VARIANTS[name]  # noqa: B018 (fails early on an unknown name)
    reference = args.reference or ("paper" if "paper" in variants else variants[0])
    if reference not in variants:
        variants = [reference, *variants]
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    args.cache.mkdir(parents=True, exist_ok=True)
    rm = resolve_model(MODEL)
    stats, _info = _obtain_statistics(rm, LAYER, None, None, None, "cpu", 0, False)
    photos = load_photos(rm, args.photos)
    print(f"{len(photos)} photos ({', '.join(p.name for p in photos)}), {args.seeds} seeds, "
          f"{torch.get_num_threads()} torch threads", flush=True)
    results: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    for name in variants:
        t0 = time.perf_counter()
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        for photo in photos:
            got = compute(rm, stats, name, photo, args.seeds, args.cache)
            scores = score(rm, photo, [g["map"] for g in got], args.step)
            for j, (g, sc) in enumerate(zip(got, scores, strict=True)):
                rows[(photo.name, j)] = {**g, **sc}
        results[name] = rows
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    summary = summarise(results, reference)
    table = markdown(summary, reference, len(photos), args.seeds)
    print(table)
    per_pair = {name: [{"photo": p, "seed": seed_of(j),
                        **{k: v for k, v in r.items() if k != "map"}}
                       for (p, j), r in rows.items()] for name, rows in results.items()}
    args.json.write_text(json.dumps({
        "model": MODEL, "layer": LAYER, "reference": reference, "step": args.step,
        "seeds": [seed_of(j) for j in range(args.seeds)],
        "photos": [{"name": p.name, "target": p.target, "probability": p.probability,
                    "boxes": p.boxes is not None} for p in photos],
        "summary": summary, "per_pair": per_pair, "table": table,
    }, indent=1))
    print(f"wrote {args.json}")
    if args.plot:
        plot_frontier(summary, reference, args.plot)
        print(f"wrote {args.plot}")
    if args.maps:
        if args.seeds < 2:
            raise SystemExit("--maps needs --seeds 2 or more")
        plot_maps(results, photos[: args.maps_photos], args.maps)
        print(f"wrote {args.maps}")


if __name__ == "__main__":
    main()
