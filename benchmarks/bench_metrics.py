"""Benchmark of deletion/insertion: the paper's protocol vs bare forward passes, and a faster step.

Prints
  (a) for deletion + insertion at the paper's protocol (10 pixels a step on 224 x 224, 5019
      points a curve), the time of :func:`inputiba.metrics.functional.perturbation_curve`
      against the time of the bare forward passes it needs (goal: ratio <= 1.15);
  (b) the AUCs at the faster default step (1% of the pixels a step, 101 points) next to the
      paper's, their differences, and the speed-up (goals: |dAUC| <= 0.01, >= 40x).

Model: the packaged EfficientNet-Lite0 (ImageNet weights, offline). Images: the built-in
localisation set (``inputiba.data.datasets.load_localization_set``), each explained for the
ImageNet class of its objects that the model rates highest, with Grad-CAM (captum,
``_conv_head``, upsampled to 224 x 224, scaled to [0, 1]) or gradient saliency.

Times are CPU seconds of this process (``time.process_time``, single thread by default), so
that other jobs on a shared machine do not distort the ratios; wall-clock seconds are printed
beside them. The bare forward time is measured on ``--bare-batches`` chunks of the same size
right before and after each image's curves and scaled to the number of inputs the curves need.
Images are taken in order of decreasing target probability (the paper evaluates only images
with p >= 0.6), so a run cut short has covered the informative ones first.

Usage:
    PYTHONPATH=src python benchmarks/bench_metrics.py                 # all 5 images (long on a CPU)
    PYTHONPATH=src python benchmarks/bench_metrics.py --images quokka 2011_000025 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from inputiba.data.datasets import load_localization_set
from inputiba.metrics import functional as MF


class ChannelsLast(nn.Module):
    """Runs the model in channels-last memory format (about 2x faster on CPUs here)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def load_lite0() -> tuple[nn.Module, callable]:
    from inputiba.models.image import load_model

    return load_model("efficientnet-lite0")


def gradcam(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    from captum.attr import LayerAttribution, LayerGradCam

    layer = model._conv_head if hasattr(model, "_conv_head") else model.model._conv_head
    cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam, x.shape[-2:], interpolate_mode="bilinear")[0, 0]
    return (cam / cam.max().clamp(min=1e-12)).detach()


def saliency(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[0, target], x)
    s = g.abs().amax(1)[0]
    return (s / s.max()).detach()


def bare_seconds_per_input(
    model: nn.Module, x: torch.Tensor, batch_size: int, batches: int
) -> float:
    chunk = x.expand(batch_size, -1, -1, -1).clone()
    with torch.no_grad():
        model(chunk[:2])  # warm-up
        t0 = time.process_time()
        for _ in range(batches):
            model(chunk)
        return (time.process_time() - t0) / (batches * batch_size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", nargs="*", help="names from the built-in set (default: all)")
    p.add_argument("--method", choices=["gradcam", "saliency"], default="gradcam")
    p.add_argument("--paper-step", type=int, default=10)
    p.add_argument("--fast-step", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bare-batches", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--skip", nargs="*", default=[], help="names to leave out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    model, preprocess = load_lite0()
    model.eval()
    fast_model = model if args.no_channels_last else ChannelsLast(model).eval()
    samples = load_localization_set()
    if args.images:
        samples = [s for s in samples if s.name in args.images]
    samples = [s for s in samples if s.name not in args.skip]
    explain = gradcam if args.method == "gradcam" else saliency
    print(
        f"EfficientNet-Lite0, {args.method} maps, {args.threads} thread(s), batch {args.batch_size}, "
        f"channels_last={not args.no_channels_last}"
    )
    prepared = []
    for s in samples:
        x = preprocess(s.image).unsqueeze(0)
        with torch.no_grad():
            probs = torch.softmax(model(x), 1)[0]
        if s.imagenet_ids:
            target = max(s.imagenet_ids, key=lambda c: probs[c].item())
        else:
            target = int(probs.argmax())
        prepared.append((probs[target].item(), s, x, probs, target))
    prepared.sort(key=lambda r: -r[0])
    print(
        "order:",
        ", ".join(f"{s.name} (class {t}, p={p:.3f})" for p, s, _, _, t in prepared),
        flush=True,
    )
    rows = []
    for _, s, x, probs, target in prepared:
        amap = explain(model, x, target)[None]
        kw = {"batch_size": args.batch_size}
        t_bare0 = bare_seconds_per_input(fast_model, x, args.batch_size, args.bare_batches)
        t0, w0 = time.process_time(), time.perf_counter()
        d_paper = MF.deletion(fast_model, x, [target], amap, step=args.paper_step, **kw)
        i_paper = MF.insertion(fast_model, x, [target], amap, step=args.paper_step, **kw)
        t_paper, w_paper = time.process_time() - t0, time.perf_counter() - w0
        t_bare1 = bare_seconds_per_input(fast_model, x, args.batch_size, args.bare_batches)
        n_paper = d_paper.scores.shape[1] + i_paper.scores.shape[1]
        t0, w0 = time.process_time(), time.perf_counter()
        d_fast = MF.deletion(fast_model, x, [target], amap, step=args.fast_step, **kw)
        i_fast = MF.insertion(fast_model, x, [target], amap, step=args.fast_step, **kw)
        t_fast, w_fast = time.process_time() - t0, time.perf_counter() - w0
        n_fast = d_fast.scores.shape[1] + i_fast.scores.shape[1]
        bare = n_paper * (t_bare0 + t_bare1) / 2
        distinct = len(set(d_paper.scores[0].tolist()))
        row = dict(
            name=s.name,
            target=target,
            prob=probs[target].item(),
            del_paper=d_paper.auc.item(),
            del_fast=d_fast.auc.item(),
            ins_paper=i_paper.auc.item(),
            ins_fast=i_fast.auc.item(),
            t_paper=t_paper,
            t_bare=bare,
            t_fast=t_fast,
            n_paper=n_paper,
            n_fast=n_fast,
            distinct=distinct,
        )
        rows.append(row)
        print(
            f"{s.name:12s} class {target:4d} p={row['prob']:.3f} | deletion AUC paper {row['del_paper']:.4f} "
            f"fast {row['del_fast']:.4f} diff {row['del_fast'] - row['del_paper']:+.4f} | insertion AUC paper "
            f"{row['ins_paper']:.4f} fast {row['ins_fast']:.4f} diff {row['ins_fast'] - row['ins_paper']:+.4f}",
            flush=True,
        )
        print(
            f"{'':12s} (a) paper protocol {n_paper} inputs: {t_paper:.1f} CPU s ({w_paper:.0f} s wall) vs "
            f"bare forwards {bare:.1f} CPU s -> ratio {t_paper / bare:.3f}; {distinct} distinct deletion "
            f"scores of {d_paper.scores.shape[1]} | (b) fast {n_fast} inputs: {t_fast:.1f} CPU s "
            f"({w_fast:.0f} s wall) -> speed-up {t_paper / t_fast:.1f}x",
            flush=True,
        )
    dd = np.array([r["del_fast"] - r["del_paper"] for r in rows])
    di = np.array([r["ins_fast"] - r["ins_paper"] for r in rows])
    tp = sum(r["t_paper"] for r in rows)
    print("summary over", len(rows), "images:")
    print(
        f"  (a) paper protocol time / bare forward time: {tp / sum(r['t_bare'] for r in rows):.3f} "
        f"(goal <= 1.15); {tp:.0f} s for {sum(r['n_paper'] for r in rows)} inputs"
    )
    print(
        f"  (b) max |dAUC| deletion {np.abs(dd).max():.4f}, insertion {np.abs(di).max():.4f} "
        f"(goal <= 0.01); mean |dAUC| {np.abs(dd).mean():.4f} / {np.abs(di).mean():.4f}; "
        f"speed-up {tp / sum(r['t_fast'] for r in rows):.1f}x (goal >= 40x), "
        f"forward passes {sum(r['n_paper'] for r in rows) / sum(r['n_fast'] for r in rows):.1f}x fewer"
    )


if __name__ == "__main__":
    main()
