"""Which real samples should the WGAN use? 'capacity' (the original code) vs 'lambda' (the paper).

Explains every image of the built-in localisation set with EfficientNet-Lite0 under both
settings (same seeds, same statistics) and prints per-mode means of deletion AUC (lower is
better), insertion AUC (higher is better) and the map's mass-in-box ratio (higher is better).

    python benchmarks/gan_real_modes.py                   # preset fast
    python benchmarks/gan_real_modes.py --preset paper
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from inputiba import InputIBA, estimate_layer_statistics
from inputiba.data.assets import standin_estimation_images
from inputiba.data.datasets import load_localization_set
from inputiba.metrics.functional import deletion, insertion, mass_in_box, region_mask
from inputiba.models.image import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="fast")
    p.add_argument("--auc-step", type=float, default=0.01)
    p.add_argument("--n-estimation", type=int, default=128)
    args = p.parse_args()
    model, prep = load_model("efficientnet-lite0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = estimate_layer_statistics(
            model, "_blocks.5", torch.split(prep.batch(standin_estimation_images(args.n_estimation)), 16),
            progress=False)
    samples = [s for s in load_localization_set() if s.imagenet_ids]
    x = prep.batch([s.image for s in samples])
    with torch.no_grad():
        logits = model(x)
    # target: the most probable ImageNet class among those the boxes stand for
    targets = torch.tensor([max(s.imagenet_ids, key=lambda c, i=i: float(logits[i, c]))
                            for i, s in enumerate(samples)])
    regions = [region_mask(s.boxes_for(int(t)), s.image.shape[:2]) for s, t in zip(samples, targets, strict=True)]
    rows = {}
    for mode in ("capacity", "lambda"):
        ex = InputIBA(model, "_blocks.5", stats, preset=args.preset, gan_real=mode)
        maps = torch.cat([ex.attribute(x[i:i + 4], target=targets[i:i + 4], seed=list(range(i, i + len(x[i:i + 4]))))
                          for i in range(0, len(x), 4)])
        d = deletion(model, x, targets, maps, step=args.auc_step).auc
        ins = insertion(model, x, targets, maps, step=args.auc_step).auc
        mib = []
        for i, s in enumerate(samples):
            full = torch.nn.functional.interpolate(maps[i:i + 1], size=s.image.shape[:2], mode="bilinear")[0, 0]
            mib.append(mass_in_box(full.numpy(), regions[i])[1])
        rows[mode] = (d.numpy(), ins.numpy(), np.array(mib))
    print(f"{len(samples)} images of the built-in localisation set, preset {args.preset!r}")
    print(f"{'gan_real':10s} {'deletion AUC':>13s} {'insertion AUC':>14s} {'mass-in-box ratio':>18s}")
    for mode, (d, ins, mib) in rows.items():
        print(f"{mode:10s} {d.mean():13.4f} {ins.mean():14.4f} {mib.mean():18.3f}")
    d0, i0, m0 = rows["capacity"]
    d1, i1, m1 = rows["lambda"]
    print(f"lambda better than capacity on: deletion {np.mean(d1 < d0):.0%}, insertion {np.mean(i1 > i0):.0%}, "
          f"mass-in-box {np.mean(m1 > m0):.0%} of the images")


if __name__ == "__main__":
    main()
