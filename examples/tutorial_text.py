"""Tutorial: explain a real movie review with InputIBA, stage by stage, and evaluate it.

Needs the text side (``inputiba.text``, the ``text`` extra; written against the feat/text
branch's API). Runs offline on a CPU with the packaged GloVe-LSTM sentiment classifier
(trained on the Rotten Tomatoes snippets on first use, about a minute, then cached):

    python examples/tutorial_text.py              # the paper preset
    python examples/tutorial_text.py --quick      # reduced steps (for the test)

It prints each token's scores per stage, and writes into --out (default ./tutorial-text):
tokens.png (per token: stage-1 feature-bottleneck capacity, which is IBA on the LSTM layer;
stage-2 GAN mask; the final InputIBA score; Integrated Gradients for comparison) and curves.png
(token deletion/insertion curves of InputIBA, IBA and IG), and prints the AUCs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from inputiba.core.layers import get_layer, layer_output, replace_output  # noqa: E402
from inputiba.methods.text import get_text_explainer  # noqa: E402
from inputiba.metrics.functional import token_perturbation_curve  # noqa: E402
from inputiba.workflows.runconfig import load_run_config  # noqa: E402

QUICK = {"feat_steps": 3, "feat_draws": 2, "gan_epochs": 1, "gan_dataset_size": 16,
         "gan_subset_size": 4, "gan_batch_size": 8, "input_steps": 5, "input_draws": 2}
REVIEW = ("an utterly charming and hilarious film that reminded me of the best comedies, "
          "though the ending drags a little")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced steps (for tests)")
    parser.add_argument("--out", default="tutorial-text", help="output folder")
    parser.add_argument("--text", default=REVIEW, help="the review to explain")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    from inputiba.modalities.text import TextInputIBA
    from inputiba.models.text_training import load_text_model

    # 1. The model and settings from the shipped configuration (lstm_text.yaml).
    cfg = load_run_config("lstm_text")
    tm = load_text_model(cfg.model.name)             # trained offline on first use, cached
    settings = cfg.resolved().to_dict()
    if args.quick:
        settings.update(QUICK)
    n = 64 if args.quick else cfg.estimation.n_samples or 1000
    settings.pop("seed")
    explainer = TextInputIBA.for_model(tm, n_samples=n, seed=cfg.seed, **settings)

    # 2. The review, tokenised; the predicted class.
    ids, mask = tm.tokenizer([args.text])
    labels, probs = tm.predict([args.text])
    target = int(labels[0])
    print(f"predicted: {tm.class_names[target]} (p = {float(probs[0]):.2f})")

    # 3. InputIBA with every stage's result; stage 1 is IBA on the feature layer.
    res = explainer.attribute(ids, [target], mask, return_details=True)
    length = int(mask[0].sum())
    words = tm.tokenizer.words(args.text)[:length]
    stages = {
        "IBA / stage 1 (bits)": res.feature_capacity[0, :length],
        "stage 2: GAN mask": res.gan_mask[0, :length],
        "InputIBA": res.attribution[0, :length],
    }
    ig = get_text_explainer("integrated_gradients", tm.model, tm.embedding_layer,
                            **({"n_steps": 8} if args.quick else {}))
    ig_map = ig.attribute(ids, [target], token_mask=mask.bool(), attention_mask=mask)
    stages["Integrated Gradients"] = ig_map[0, :length]
    print(f"{'token':14s}" + "".join(f"{k[:14]:>16s}" for k in stages))
    for j, w in enumerate(words):
        print(f"{w[:14]:14s}" + "".join(f"{float(v[j]):16.3f}" for v in stages.values()))

    fig, axes = plt.subplots(len(stages), 1, figsize=(max(6, 0.45 * length), 1.3 * len(stages)))
    for ax, (title, values) in zip(axes, stages.items(), strict=True):
        v = values.detach().float().numpy()
        ax.imshow(v[None] / (v.max() + 1e-12), cmap="Reds", aspect="auto", vmin=0, vmax=1)
        ax.set_yticks([])
        ax.set_xticks(range(length), words, rotation=60, fontsize=8)
        ax.set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(out / "tokens.png", dpi=100)
    plt.close(fig)

    # 4. Token deletion / insertion: embeddings of the top tokens replaced by zeros.
    emb_module = get_layer(tm.model, tm.embedding_layer)
    with torch.no_grad():
        emb = layer_output(tm.model, tm.embedding_layer, ids, attention_mask=mask)

    def forward(e: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        dummy = ids[:1].expand(e.shape[0], -1)
        with replace_output(emb_module, lambda _r: e):
            return tm.model(dummy, attention_mask=m)

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    maps = {"InputIBA": res.attribution, "IBA": res.feature_capacity, "IG": ig_map}
    for label, amap in maps.items():
        for ax, mode in zip(axes, ("deletion", "insertion"), strict=True):
            curve = token_perturbation_curve(forward, emb, [target], amap.detach(), mask,
                                             mode=mode, model=tm.model)
            ax.plot(np.asarray(curve.fractions[0]), np.asarray(curve.scores[0]),
                    label=f"{label} (AUC {float(curve.auc[0]):.3f})")
            ax.set_title(mode)
            ax.set_xlabel("fraction of tokens")
            print(f"{label:9s} {mode:9s} AUC {float(curve.auc[0]):.3f}")
    axes[0].set_ylabel(f"p({tm.class_names[target]})")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
    print(f"wrote {out / 'tokens.png'} and {out / 'curves.png'}")


if __name__ == "__main__":
    main()
