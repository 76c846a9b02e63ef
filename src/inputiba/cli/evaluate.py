"""``inputiba evaluate``: score saved attribution maps with the evaluation suite.

Reads a folder of ``<stem>.npy`` maps (float ``H x W`` at the image's original size, as
``inputiba explain`` writes them; any size is resized to the model's input for the
perturbation metrics), the matching images, a model and boxes, and writes::

    OUT/per_image/<stem>.json   every metric of one image (+ target, probability, skips)
    OUT/summary.json            mean, std and count per metric; skipped images with reasons
    OUT/curves/<stem>.png       deletion and insertion curves (matplotlib, Agg)
    OUT/curves.png              the mean curves over all images
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["register", "run", "resolve_model", "evaluate_maps"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------- model


def resolve_model(
    name: str, weights: str | None = None
) -> tuple[nn.Module, Callable[[Any], torch.Tensor]]:
    """``(model, preprocess)`` in eval mode, via :func:`inputiba.models.image.load_model`."""
    from inputiba.models.image import load_model

    model, preprocess = load_model(name, weights=weights)
    return model.eval(), preprocess


# ----------------------------------------------------------------------------- inputs


def _map_files(maps_dir: Path) -> dict[str, Path]:
    """``stem -> path`` of the maps; ``<stem>.feature.npy`` / ``<stem>.gan.npy`` are not maps."""
    if not maps_dir.is_dir():
        raise FileNotFoundError(f"maps folder {maps_dir} does not exist")
    out = {}
    for f in sorted(maps_dir.glob("*.npy")):
        stem = f.name[: -len(".npy")]
        if stem.endswith((".feature", ".gan", ".capacity")):
            continue
        out[stem] = f
    if not out:
        raise FileNotFoundError(f"no <stem>.npy maps in {maps_dir}")
    return out


def _load_map(path: Path) -> np.ndarray:
    try:
        m = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise ValueError(f"{path}: not a readable .npy array ({exc.__class__.__name__})") from exc
    m = np.squeeze(np.asarray(m, dtype=np.float64))
    if m.ndim != 2:
        raise ValueError(f"{path}: a map must be H x W, got shape {np.shape(m)}")
    if not np.isfinite(m).all():
        raise ValueError(f"{path}: the map has NaN or infinite values")
    return m


def _targets_from_results(maps_dir: Path) -> dict[str, int]:
    """Targets recorded by ``inputiba explain`` in ``results.json`` (when present)."""
    path = maps_dir / "results.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    records = data.get("images", data.get("results", [])) if isinstance(data, dict) else data
    out = {}
    for r in records if isinstance(records, list) else []:
        if not isinstance(r, dict):
            continue
        file = r.get("stem") or r.get("file") or r.get("image") or r.get("path")
        target = r.get("target", r.get("target_index"))
        if isinstance(target, dict):
            target = target.get("index")
        if file is not None and isinstance(target, int):
            out[Path(str(file)).stem if "stem" not in r else str(file)] = target
    return out


def _find_image(images_dir: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        for cand in (images_dir / f"{stem}{ext}", images_dir / f"{stem}{ext.upper()}"):
            if cand.exists():
                return cand
    return None


def _boxes_for(boxes_dir: Path | None, stem: str, wnid_to_idx: dict[str, int] | None):
    """``(boxes, class_ids or None)`` from ``<stem>.json`` (labelme) or ``<stem>.xml`` (VOC)."""
    from inputiba.data.datasets import LABEL_TO_IMAGENET, read_labelme, read_voc_xml

    if boxes_dir is None:
        return None, None
    if (boxes_dir / f"{stem}.json").exists():
        ann = read_labelme(boxes_dir / f"{stem}.json", masks=False)
        ids = [LABEL_TO_IMAGENET.get(lab) for lab in ann.labels]
    elif (boxes_dir / f"{stem}.xml").exists():
        ann = read_voc_xml(boxes_dir / f"{stem}.xml")
        ids = [
            ((wnid_to_idx[lab],) if wnid_to_idx and lab in wnid_to_idx else None)
            for lab in ann.labels
        ]
    else:
        return None, None
    if all(i is None for i in ids):
        return ann.boxes, None  # labels unknown: every box counts
    return ann.boxes, [tuple(i or ()) for i in ids]


class _Item:
    def __init__(self, stem, image, boxes, class_ids, target=None):
        self.stem, self.image, self.boxes, self.class_ids, self.target = (
            stem,
            image,
            boxes,
            class_ids,
            target,
        )


def _collect(args: argparse.Namespace, maps: dict[str, Path]) -> tuple[list[_Item], list[dict]]:
    from inputiba.data.datasets import ImageNetBoxFolder, load_image, load_localization_set

    items, missing = [], []
    if args.builtin:
        by_name = {s.name: s for s in load_localization_set()}
        for stem in maps:
            s = by_name.get(stem)
            if s is None:
                missing.append(
                    {"name": stem, "reason": f"not in the built-in set ({', '.join(by_name)})"}
                )
                continue
            items.append(_Item(stem, s.image, s.boxes, s.class_ids))
        return items, missing
    if args.imagenet:
        ds = ImageNetBoxFolder(args.imagenet, args.split)
        index = {p.stem: i for i, (p, _) in enumerate(ds.items)}
        for stem in maps:
            if stem not in index:
                missing.append({"name": stem, "reason": f"no image {stem} under {args.imagenet}"})
                continue
            s = ds[index[stem]]
            items.append(_Item(stem, s.image, s.boxes, s.class_ids, ds.target(index[stem])))
        return items, missing
    if not args.images:
        raise ValueError("give the images: --images DIR, --imagenet ROOT or --builtin")
    wnid_to_idx = None
    if args.class_index:
        index = json.loads(Path(args.class_index).read_text())
        wnid_to_idx = {v[0]: int(k) for k, v in index.items()}
    images_dir = Path(args.images)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder {images_dir} does not exist")
    boxes_dir = Path(args.boxes) if args.boxes else None
    if boxes_dir is not None and not boxes_dir.is_dir():
        raise FileNotFoundError(f"boxes folder {boxes_dir} does not exist")
    for stem in maps:
        path = _find_image(images_dir, stem)
        if path is None:
            missing.append({"name": stem, "reason": f"no image {stem}.* in {images_dir}"})
            continue
        boxes, ids = _boxes_for(boxes_dir or images_dir, stem, wnid_to_idx)
        items.append(_Item(stem, load_image(path), boxes, ids))
    return items, missing


# ----------------------------------------------------------------------------- evaluation


def _plot_curves(
    path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, (fr, sc, area) in curves.items():
        ax.plot(fr, sc, label=f"{label} (AUC {area:.3f})")
    ax.set_xlabel("fraction of pixels")
    ax.set_ylabel("target probability")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_sanitize(data), indent=2, default=_jsonable, allow_nan=False))
    tmp.replace(path)


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _sanitize(o: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(o, dict):
        return {k: _sanitize(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_sanitize(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        o = o.item()
    return _clean(o)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


ALL_METRICS = ("deletion", "insertion", "ehr", "pointing", "mass", "sensitivity")
DEFAULT_METRICS = ("deletion", "insertion", "ehr", "pointing", "mass")


def evaluate_maps(args: argparse.Namespace) -> int:
    """Run the evaluation described by the parsed arguments; returns the exit status."""
    from tqdm.auto import tqdm

    from inputiba.metrics import (
        Deletion,
        EffectiveHeatRatio,
        Insertion,
        MassInBox,
        PointingGame,
        SensitivityN,
    )

    metrics = list(dict.fromkeys(args.metrics))
    bad = [m for m in metrics if m not in ALL_METRICS]
    if bad:
        raise ValueError(f"unknown metrics {bad}; choose from {', '.join(ALL_METRICS)}")
    maps_dir = Path(args.maps)
    maps = _map_files(maps_dir)
    targets = _targets_from_results(maps_dir)
    if args.targets:
        targets.update(
            {str(k): int(v) for k, v in json.loads(Path(args.targets).read_text()).items()}
        )
    if args.target is not None:
        targets = {stem: args.target for stem in maps}
    items, failed = _collect(args, maps)
    out = Path(args.out)
    (out / "per_image").mkdir(parents=True, exist_ok=True)
    if not args.no_plots:
        (out / "curves").mkdir(exist_ok=True)

    need_model = (
        any(m in metrics for m in ("deletion", "insertion", "sensitivity"))
        or args.min_probability > 0
    )
    model = preprocess = None
    if need_model or any(it.target is None and it.stem not in targets for it in items):
        model, preprocess = resolve_model(args.model, args.weights)
        model = model.to(args.device)
    step: int | float = 10 if args.paper else args.step
    bar = not args.quiet
    dele = (
        Deletion(model, step=step, batch_size=args.batch_size, progress=bar)
        if "deletion" in metrics
        else None
    )
    ins = (
        Insertion(
            model, step=step, batch_size=args.batch_size, blur_sigma=args.blur_sigma, progress=bar
        )
        if "insertion" in metrics
        else None
    )
    sens = (
        SensitivityN(
            model, n_subsets=args.sensitivity_subsets, batch_size=args.batch_size, progress=bar
        )
        if "sensitivity" in metrics
        else None
    )
    ehr = (
        EffectiveHeatRatio(max_region_fraction=args.ehr_max_box_fraction or None)
        if "ehr" in metrics
        else None
    )
    pg = PointingGame(tolerance=args.pointing_tolerance) if "pointing" in metrics else None
    mib = MassInBox() if "mass" in metrics else None
    box_metrics = [m for m in (ehr, pg, mib) if m is not None]
    skipped_prob: list[dict] = []
    mean_curves: dict[str, list[np.ndarray]] = {"deletion": [], "insertion": []}

    for it in tqdm(items, desc="evaluating", unit="image", disable=args.quiet):
        record: dict[str, Any] = {"name": it.stem, "map": str(maps[it.stem]), "skipped": []}
        try:
            amap = _load_map(maps[it.stem])
            h, w = it.image.shape[:2]
            if amap.shape != (h, w):
                raise ValueError(
                    f"map {maps[it.stem].name} is {amap.shape[0]} x {amap.shape[1]} but its image is "
                    f"{h} x {w}: maps must be at the image's original size (as inputiba explain writes them)"
                )
            if amap.min() < 0 or amap.max() > 1:
                # not in [0, 1] (another method's raw scores): min-max scale, which keeps the
                # pixel order (deletion/insertion unchanged) and puts EHR's threshold on [0, 1]
                lo, hi = amap.min(), amap.max()
                amap = (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap)
                record["rescaled_from"] = [float(lo), float(hi)]
            x = None
            if model is not None:
                x = preprocess(it.image).unsqueeze(0).to(args.device)
                with torch.no_grad():
                    probs = torch.softmax(model(x).float(), 1)[0]
            target = targets.get(it.stem, it.target)
            if target is None:
                ids = sorted({c for cls in (it.class_ids or []) for c in cls})
                target = max(ids, key=lambda c: probs[c].item()) if ids else int(probs.argmax())
                record["target_source"] = "boxes" if ids else "prediction"
            target = int(target)
            record["target"] = target
            if model is not None:
                if not 0 <= target < probs.numel():
                    raise ValueError(
                        f"target {target} is out of range for a model with {probs.numel()} classes"
                    )
                record["probability"] = probs[target].item()
                if record["probability"] < args.min_probability:
                    reason = (
                        f"target probability {record['probability']:.3f} < {args.min_probability}"
                    )
                    record["skipped"].append({"metric": "all", "reason": reason})
                    skipped_prob.append({"name": it.stem, "reason": reason})
                    _write_json(out / "per_image" / f"{it.stem}.json", record)
                    continue
            # box metrics at the image's resolution
            if box_metrics:
                if it.boxes is None or len(it.boxes) == 0:
                    region = None
                elif it.class_ids is None:
                    region = it.boxes
                else:
                    keep = [i for i, cls in enumerate(it.class_ids) if target in cls]
                    region = it.boxes[keep] if keep else None
                if region is None:
                    record["skipped"].append(
                        {"metric": "boxes", "reason": f"no boxes of class {target}"}
                    )
                for m in box_metrics:
                    before = len(m.skipped)
                    (row,) = m.update([amap], [region], names=[it.stem])
                    if row is not None:
                        record.update({k: _clean(v) for k, v in row.items()})
                    elif len(m.skipped) > before and region is not None:
                        record["skipped"].append(
                            {"metric": type(m).__name__, "reason": m.skipped[-1]["reason"]}
                        )
            # perturbation metrics at the model's input resolution
            if x is not None and (dele or ins or sens):
                small = F.interpolate(
                    torch.as_tensor(amap, dtype=torch.float32)[None, None],
                    size=x.shape[-2:],
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )[0].to(args.device)
                curves = {}
                for name, m in (("deletion", dele), ("insertion", ins)):
                    if m is None:
                        continue
                    res = m.update(x, [target], small, names=[it.stem])
                    record[f"{name}_auc"] = res.auc[0].item()
                    fr, sc = res.fractions.cpu().numpy(), res.scores[0].cpu().numpy()
                    curves[name] = (fr, sc, res.auc[0].item())
                    mean_curves[name].append(sc)
                    record[f"{name}_curve"] = {
                        "fractions": fr.round(6).tolist(),
                        "scores": sc.round(6).tolist(),
                    }
                if sens is not None:
                    r = sens.update(x, [target], small, names=[it.stem])
                    record["sensitivity_n"] = _clean(r.mean[0].item())
                    record["sensitivity_n_per_n"] = {
                        str(n): _clean(float(c))
                        for n, c in zip(r.ns, r.correlations[0].tolist(), strict=True)
                    }
                if curves and not args.no_plots:
                    _plot_curves(
                        out / "curves" / f"{it.stem}.png", curves, f"{it.stem}: class {target}"
                    )
        except (ValueError, FileNotFoundError) as exc:
            failed.append({"name": it.stem, "reason": str(exc)})
            record["error"] = str(exc)
            print(f"inputiba evaluate: {it.stem}: {exc}", file=sys.stderr)
        _write_json(out / "per_image" / f"{it.stem}.json", record)

    summary: dict[str, Any] = {
        "maps": str(maps_dir),
        "model": args.model,
        "settings": {
            "step": step,
            "min_probability": args.min_probability,
            "blur_sigma": args.blur_sigma,
            "ehr_max_box_fraction": args.ehr_max_box_fraction,
            "pointing_tolerance": args.pointing_tolerance,
            "metrics": metrics,
        },
        "n_maps": len(maps),
        "metrics": {},
        "skipped": {"probability": skipped_prob},
        "failed": failed,
    }
    for key, m in (("deletion_auc", dele), ("insertion_auc", ins), ("sensitivity_n", sens)):
        if m is not None:
            s = m.summary()
            summary["metrics"][key] = s[m.keys[0]]
            if "per_n" in s:
                summary["metrics"]["sensitivity_n_per_n"] = s["per_n"]
    for m in box_metrics:
        s = m.summary()
        for k in m.keys:
            summary["metrics"][k] = s[k]
        summary["skipped"][type(m).__name__] = s["skipped"]
    summary = _sanitize(summary)
    _write_json(out / "summary.json", summary)
    if not args.no_plots and any(mean_curves.values()):
        curves = {}
        for name, m in (("deletion", dele), ("insertion", ins)):
            if m is not None and mean_curves[name]:
                sc = np.mean(np.stack(mean_curves[name]), 0)
                fr = m.curves[0][0]
                curves[f"mean {name}"] = (
                    fr,
                    sc,
                    float(np.sum(np.diff(fr) * (sc[1:] + sc[:-1]) / 2)),
                )
        _plot_curves(
            out / "curves.png",
            curves,
            f"mean over {len(mean_curves['deletion'] or mean_curves['insertion'])} images",
        )
    if not args.quiet:
        for k, v in summary["metrics"].items():
            if isinstance(v, dict) and "mean" in v:
                mean = "nan" if v["mean"] is None else f"{v['mean']:.4f}"
                std = "nan" if v["std"] is None else f"{v['std']:.4f}"
                print(f"{k:20s} {mean} +- {std} (n={v['n']})")
        print(f"wrote {out / 'summary.json'}")
    return 1 if failed else 0


# ----------------------------------------------------------------------------- parser


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score saved attribution maps (deletion/insertion, EHR, pointing game, ...)",
        description=(
            "Score attribution maps saved as <stem>.npy (float H x W at the image's original size, "
            "as `inputiba explain` writes them) against their images, a model and boxes."
        ),
        epilog=(
            "examples:\n"
            "  inputiba evaluate out/ --builtin --out eval/\n"
            "  inputiba evaluate maps/ --images photos/ --boxes labels/ --model efficientnet-lite0\n"
            "  inputiba evaluate maps/ --imagenet /data/imagenet_boxes --split val --paper\n"
            "\nboxes: labelme <stem>.json or PASCAL VOC <stem>.xml beside the images or in --boxes;\n"
            "targets: --target, --targets FILE.json {stem: class}, results.json of `inputiba explain`,\n"
            "the classes of the boxes (the one the model rates highest), else the prediction."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("maps", help="folder of <stem>.npy maps")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", help="folder of the images (<stem>.jpg/.png/...)")
    src.add_argument(
        "--imagenet",
        help="ImageNet-style root: images/<split>/<wnid>/, annotations/<split>/<wnid>/*.xml",
    )
    src.add_argument(
        "--builtin",
        action="store_true",
        help="the built-in localisation set (labelme VOC photos + quokka)",
    )
    p.add_argument("--split", default="val", help="split folder of --imagenet (default val)")
    p.add_argument(
        "--boxes", help="folder of labelme .json / VOC .xml box files (default: beside the images)"
    )
    p.add_argument(
        "--class-index", help="imagenet_class_index.json to map VOC <name> WordNet ids to classes"
    )
    p.add_argument(
        "--model", default="efficientnet-lite0", help="model name or package.module:factory"
    )
    p.add_argument("--weights", help="weights file for the model")
    p.add_argument("--target", type=int, help="one class index for every image")
    p.add_argument("--targets", help="JSON file {stem: class index}")
    p.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        metavar="METRIC",
        help=f"any of {', '.join(ALL_METRICS)} (default: all but sensitivity)",
    )
    p.add_argument(
        "--step",
        type=float,
        default=0.01,
        help="deletion/insertion step: a fraction of the pixels (<1) or pixels (>=1); default 0.01",
    )
    p.add_argument(
        "--paper", action="store_true", help="the paper's protocol: 10 pixels a step (50x slower)"
    )
    p.add_argument(
        "--blur-sigma", type=float, default=15.0, help="blur of the insertion start image"
    )
    p.add_argument(
        "--min-probability",
        type=float,
        default=0.6,
        help="skip images whose target probability is lower (the paper: 0.6; 0 keeps all)",
    )
    p.add_argument(
        "--ehr-max-box-fraction",
        type=float,
        default=0.33,
        help="EHR skips images whose boxes cover more (the paper: 0.33; 0 keeps all)",
    )
    p.add_argument(
        "--pointing-tolerance", type=float, default=15.0, help="pointing game tolerance in pixels"
    )
    p.add_argument("--sensitivity-subsets", type=int, default=100, help="random subsets per N")
    p.add_argument("--batch-size", type=int, default=64, help="inputs per forward pass")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="evaluation", help="output folder (default ./evaluation)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG curve plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary print")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.step >= 1 and not float(args.step).is_integer():
        raise ValueError(f"--step {args.step}: use a fraction below 1 or a whole number of pixels")
    if args.step >= 1:
        args.step = int(args.step)
    return evaluate_maps(args)
