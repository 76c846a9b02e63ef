"""Tutorial: explain a real photo with InputIBA, stage by stage, compare with IBA, evaluate.

Runs offline end to end on a CPU with the packaged EfficientNet-Lite0 and a built-in photo
(scikit-image's cat, "chelsea"):

    python examples/tutorial_images.py                  # the default preset, consensus (~1 min)
    python examples/tutorial_images.py --preset paper   # the original settings, GAN included
    python examples/tutorial_images.py --quick          # reduced steps (seconds; rougher maps)

It writes into --out (default ./tutorial-images): stages.png (the photo, the stage-1 feature
bottleneck's capacity, the stage-2 GAN mask, the final InputIBA map, IBA's map) and curves.png
(deletion and insertion curves of both), and prints the AUCs. The default preset skips the GAN
(stage 3's prior is then the GAN's initial mask, made from the stage-1 map, and the panel says
so); ``--preset paper`` or ``fast`` train it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from inputiba import IBA, InputIBA  # noqa: E402
from inputiba.data.assets import builtin_photos, standin_estimation_images  # noqa: E402
from inputiba.metrics.functional import deletion, insertion  # noqa: E402
from inputiba.models.image import imagenet_class_names, load_model  # noqa: E402
from inputiba.workflows.runconfig import load_run_config  # noqa: E402

#: Reduced steps for --quick (and the test that keeps this tutorial working).
QUICK = {"feat_steps": 2, "feat_draws": 2, "gan_epochs": 1, "gan_dataset_size": 8,
         "gan_subset_size": 4, "gan_batch_size": 8, "input_steps": 3, "input_draws": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced steps (for tests)")
    parser.add_argument("--out", default="tutorial-images", help="output folder")
    parser.add_argument("--preset", help="an InputIBA preset (default: the configuration's)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    # 1. The model and its settings, from the shipped run configuration (what
    #    `inputiba explain --config efficientnet_lite0` uses).
    cfg = load_run_config("efficientnet_lite0")
    if args.preset:
        cfg = cfg.with_overrides(preset=args.preset)
    model, preprocess = load_model(cfg.model.name)          # packaged weights, eval mode
    layer = cfg.model.layer                                 # "_blocks.5"; see `inputiba layers`

    # 2. A real photo, normalised to the model's input (1, 3, 224, 224).
    photo = builtin_photos(["chelsea"])["chelsea"]
    x = preprocess(photo)[None]
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    target = int(probs.argmax())
    name = imagenet_class_names()[target]
    print(f"predicted: {name} (class {target}, p = {probs[target]:.2f})")

    # 3. The layer statistics: a few hundred images like the ones to explain. Offline we use
    #    the built-in stand-in (random crops of the built-in photos); pass real images for real
    #    work (the paper: 1,000 ImageNet validation images).
    n = 8 if args.quick else cfg.estimation.n_samples or 256
    crops = standin_estimation_images(n=n, seed=0)
    batches = [torch.stack([preprocess(c) for c in crops[i:i + 16]]) for i in range(0, n, 16)]

    # 4. InputIBA, keeping each stage's result.
    settings = cfg.resolved().to_dict()
    if args.quick:
        settings.update(QUICK)
    explainer = InputIBA(model, layer, **settings)
    explainer.estimate(batches, n_samples=n)
    res = explainer.attribute(x, target=[target], return_details=True)
    print("seconds per stage:", {k: round(v, 1) for k, v in res.seconds.items()})

    # 5. IBA (the feature bottleneck alone, upsampled), with the same statistics.
    iba = IBA(model, layer, **({"steps": 2, "draws": 2} if args.quick else {}))
    iba.statistics = explainer.statistics
    iba_map = iba.attribute(x, [target], upsample=True)

    # 6. Each stage's map.
    panels = [
        ("photo (as the model sees it)", preprocess.denormalize(x)[0].permute(1, 2, 0), None),
        ("stage 1: feature bottleneck\n(capacity, bits)", res.feature_map[0, 0], "magma"),
        ("stage 2: GAN mask" if explainer.config.gan_epochs > 0
         else "no stage 2: stage 3's prior\n(the GAN's initial mask)", res.gan_mask[0, 0],
         "viridis"),
        ("stage 3: InputIBA", res.attribution[0, 0], "jet"),
        ("IBA (layer bottleneck)", iba_map[0, 0], "jet"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (title, img, cmap) in zip(axes, panels, strict=True):
        data = img.detach().cpu().numpy()
        ax.imshow(data, cmap=cmap)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{name} (class {target})")
    fig.tight_layout()
    fig.savefig(out / "stages.png", dpi=100)
    plt.close(fig)

    # 7. Deletion (lower AUC better) and insertion (higher AUC better).
    step = 0.1 if args.quick else 0.01
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for label, amap in (("InputIBA", res.attribution), ("IBA", iba_map)):
        for ax, metric in zip(axes, (deletion, insertion), strict=True):
            curve = metric(model, x, [target], amap, step=step)
            ax.plot(curve.fractions.numpy(), curve.scores[0].numpy(),
                    label=f"{label} (AUC {float(curve.auc[0]):.3f})")
            ax.set_title(curve.mode)
            ax.set_xlabel("fraction of pixels")
            print(f"{label:8s} {curve.mode:9s} AUC {float(curve.auc[0]):.3f}")
    axes[0].set_ylabel(f"p({name})")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    print(f"wrote {out / 'stages.png'} and {out / 'curves.png'}")


if __name__ == "__main__":
    main()
