"""How often the top-3 tokens of a map hit VADER's sentiment lexicon, versus 3 random tokens.

Usage::

    python benchmarks/text_lexicon_hits.py --model lstm --reviews 48 --preset fast
    python benchmarks/text_lexicon_hits.py --model lstm --set input_beta=30   # the original beta

Takes held-out Rotten Tomatoes snippets the model classifies with probability >= 0.9 (at least
6 words), explains them with InputIBA, and prints the hit rate of the top-3 tokens of the final
map, of the stage-1 capacity per token, of the GAN mask, and of 3 random tokens of the same
review (averaged over 100 draws).
"""

from __future__ import annotations

import argparse
import json
import random

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lstm")
    parser.add_argument("--reviews", type=int, default=48)
    parser.add_argument("--preset", default="paper", choices=["paper", "fast"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--theta-init", default="capacity", choices=["capacity", "zero"],
                        help="GAN mask logits start from the stage-1 capacity or from 0")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: json.loads(v) for k, v in (p.split("=", 1) for p in args.set)}

    from inputiba.data.text import snippet_split, vader_lexicon
    from inputiba.modalities.text import TextInputIBA
    from inputiba.models.text_training import load_text_model

    tm = load_text_model(args.model)
    lex = vader_lexicon()
    _, test = snippet_split()
    texts = [t for t, _ in test[:1000]]
    _, p = tm.predict(texts)
    words_of = (tm.tokenizer.words if hasattr(tm.tokenizer, "words")
                else lambda t: tm.tokenizer.tokens(tm.tokenizer.ids(t)))
    chosen = [t for t, q in zip(texts, p.tolist(), strict=True)
              if q >= 0.9 and len(t.split()) >= 6][: args.reviews]
    explainer = TextInputIBA.for_model(tm, preset=args.preset, **overrides)
    explainer.theta_init = args.theta_init
    rng = random.Random(0)
    hits = {"inputiba": 0.0, "stage-1 capacity": 0.0, "gan mask": 0.0, "random": 0.0}
    for start in range(0, len(chosen), args.batch_size):
        chunk = chosen[start : start + args.batch_size]
        ids, mask = tm.tokenizer(chunk)
        res = explainer.attribute(ids, attention_mask=mask, return_details=True)
        maps = {"inputiba": res.attribution, "stage-1 capacity": res.feature_capacity,
                "gan mask": res.gan_mask}
        for i, text in enumerate(chunk):
            n = int(mask[i].sum())
            words = words_of(text)[:n]
            for name, m in maps.items():
                top = m[i, :n].argsort(descending=True)[:3].tolist()
                hits[name] += any(words[j].lower() in lex for j in top)
            hits["random"] += sum(any(w.lower() in lex for w in rng.sample(words, 3))
                                  for _ in range(100)) / 100
    print(f"model {args.model}, preset {args.preset}, overrides {overrides}, "
          f"theta init {args.theta_init}, "
          f"{len(chosen)} held-out reviews with p >= 0.9")
    for name, h in hits.items():
        print(f"  top-3 tokens hit the VADER lexicon: {name:17s} {h / len(chosen):.3f}")


if __name__ == "__main__":
    main()
