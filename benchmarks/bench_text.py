"""Seconds per review by InputIBA stage, for the LSTM and MiniLM sentiment models.

Usage::

    python benchmarks/bench_text.py                       # both models, batch 1 and 16, "paper"
    python benchmarks/bench_text.py --models lstm --preset fast --threads 1

Explains held-out Rotten Tomatoes snippets (the first ``--reviews`` of the test split) and
prints, per model and batch size, the wall time per review of stage 1 (feature bottleneck),
stage 2 (WGAN) and stage 3 (input bottleneck), and their total. The packaged models are
trained on first use (``python -m inputiba.models.text_training``), and the token statistics estimated
once; neither is timed.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["lstm", "minilm"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--reviews", type=int, default=16, help="reviews per setting")
    parser.add_argument("--preset", default="paper", choices=["paper", "fast"])
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from inputiba.data.text import snippet_split
    from inputiba.modalities.text import TextInputIBA
    from inputiba.models.text_training import load_text_model

    _, test = snippet_split()
    texts = [t for t, _ in test[: args.reviews]]
    print(f"device {args.device}, threads {torch.get_num_threads()}, preset {args.preset}, "
          f"{len(texts)} reviews (mean {sum(len(t.split()) for t in texts) / len(texts):.1f} "
          "words)")
    print(f"{'model':8} {'batch':>5} {'feature':>9} {'gan':>9} {'input':>9} {'total':>9}"
          "   (seconds per review)")
    for name in args.models:
        tm = load_text_model(name)
        tm.model.to(args.device)
        explainer = TextInputIBA.for_model(tm, preset=args.preset)
        for bs in args.batch_sizes:
            totals = {"feature": 0.0, "gan": 0.0, "input": 0.0}
            t0 = time.perf_counter()
            for start in range(0, len(texts), bs):
                ids, mask = tm.tokenizer(texts[start : start + bs])
                res = explainer.attribute(
                    ids.to(args.device), attention_mask=mask.to(args.device),
                    return_details=True,
                )
                for k in totals:
                    totals[k] += res.seconds[k]
            wall = time.perf_counter() - t0
            n = len(texts)
            print(f"{name:8} {bs:5d} {totals['feature'] / n:9.3f} {totals['gan'] / n:9.3f} "
                  f"{totals['input'] / n:9.3f} {wall / n:9.3f}")


if __name__ == "__main__":
    main()
