"""Draw docs/method_stages.jpg: the three stages' maps of InputIBA on one built-in photo.

Run from the repository root (a few minutes on two CPU cores, most of it the "paper" run;
presets "fast" and "paper"):

    python docs/method_figure.py

EfficientNet-Lite0 (packaged weights), layer ``_blocks.5``, statistics from 128 stand-in
estimation crops, the "chelsea" photo explained for ImageNet class 285 (Egyptian cat), seed 0.
It also prints, per preset, how far stage 2 moved the GAN mask from its initialisation.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from inputiba import InputIBA  # noqa: E402
from inputiba.data.assets import builtin_photos, standin_estimation_images  # noqa: E402
from inputiba.models import load_model  # noqa: E402

PRESETS_SHOWN = ("fast", "paper")


def main() -> None:
    torch.manual_seed(0)
    model, prep = load_model("efficientnet-lite0")
    stats = InputIBA(model, "_blocks.5").estimate(
        torch.split(prep.batch(standin_estimation_images(128)), 16), n_samples=128,
        progress=False)
    photo = builtin_photos(["chelsea"])["chelsea"]
    x = prep.batch([photo])
    shown = prep.denormalize(x)[0].permute(1, 2, 0).numpy()

    fig, axes = plt.subplots(2, 4, figsize=(13, 7))
    for row, preset in zip(axes, PRESETS_SHOWN, strict=True):
        explainer = InputIBA(model, "_blocks.5", statistics=stats, preset=preset)
        res = explainer.attribute(x, target=285, seed=0, return_details=True)
        feat = res.feature_map[0, 0].numpy()
        gan = res.gan_mask[0, 0].numpy()
        final = res.attribution[0, 0].numpy()
        start = torch.sigmoid(res.feature_map)[0, 0].numpy()  # the GAN mask before training
        print(f"preset {preset}: target probability {float(res.probabilities[0]):.3f}, "
              f"seconds per stage {({k: round(v, 1) for k, v in res.seconds.items()})}")
        print(f"  GAN mask in [{gan.min():.3f}, {gan.max():.3f}]; mean |m - m_init| = "
              f"{np.abs(gan - start).mean():.4f}; "
              f"Pearson(m, m_init) = {np.corrcoef(gan.ravel(), start.ravel())[0, 1]:.3f}")
        panels = [
            (shown, f'preset "{preset}"', None),
            (feat, "stage 1: capacity at _blocks.5\n(bits per pixel, 14 x 14 upsampled)",
             "magma"),
            (gan, "stage 2: GAN input mask m\n(mean over colour channels)", "viridis"),
            (final, "stage 3: InputIBA map\n(sigmoid(alpha), channel mean)", "viridis"),
        ]
        for ax, (img, title, cmap) in zip(row, panels, strict=True):
            im = ax.imshow(img, cmap=cmap)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
            if cmap is not None:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.tight_layout()
    out = Path(__file__).with_name("method_stages.jpg")
    fig.savefig(out, dpi=80, pil_kwargs={"quality": 85})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
