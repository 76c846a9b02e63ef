"""How often the top-3 tokens of a map hit VADER's sentiment lexicon, versus 3 random tokens.

Usage::

    python benchmarks/text_lexicon_hits.py --model lstm --reviews 48 --preset fast
    python benchmarks/text_lexicon_hits.py --model lstm --set input_beta=30   # the original beta
    python benchmarks/text_lexicon_hits.py --model lstm --preset fast consensus paper --seeds 3

Takes held-out Rotten Tomatoes snippets the model classifies with probability >= 0.9 (at least
6 words), explains them with InputIBA, and prints the hit rate of the top-3 tokens of the final
map, of the stage-1 capacity per token, of the GAN mask, and of 3 random tokens of the same
review (averaged over 100 draws). With ``--seeds N`` (N >= 2) each preset runs N times with
seeds 0, 1000, 2000, ...: hit rates are averaged over the runs, with their spread, and the
seed-to-seed agreement of the final scores is the Pearson correlation of two runs' scores of
the same review over its tokens, averaged over reviews and run pairs. Deletion and insertion
AUCs remove (or put back) tokens one at a time in the order of the final scores, a removed
token's embedding set to zero, and score the target's probability; each preset after the first
also gets the paired difference to the first (per review, averaged over runs; 95% t-interval
over reviews). Seconds per review are wall time of the ``attribute`` calls.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch


def main() -> None:
    from inputiba.core.config import PRESETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lstm")
    parser.add_argument("--reviews", type=int, default=48)
    parser.add_argument("--preset", nargs="+", default=["paper"], choices=list(PRESETS))
    parser.add_argument("--seeds", type=int, default=1,
                        help="runs per preset (seeds 0, 1000, ...); >= 2 adds seed agreement")
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
    print(f"model {args.model}, overrides {overrides}, theta init {args.theta_init}, "
          f"{len(chosen)} held-out reviews with p >= 0.9, {args.seeds} seed(s)")
    print("| preset | InputIBA | stage-1 capacity | GAN mask | 3 random tokens | "
          "seed agreement | deletion AUC | insertion AUC | s per review |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    first: dict[str, torch.Tensor] = {}
    for preset in args.preset:
        explainer = TextInputIBA.for_model(tm, preset=preset, **overrides)
        explainer.theta_init = args.theta_init
        k = explainer.config.ensemble
        runs = [_run(explainer, tm, chosen, words_of, lex, args.batch_size, seed_base=r * 1000,
                     spacing=max(k, 1)) for r in range(args.seeds)]
        rates = {name: [r[0][name] / len(chosen) for r in runs] for name in runs[0][0]}
        corr = _seed_agreement([r[1] for r in runs])
        seconds = sum(r[2] for r in runs) / (len(runs) * len(chosen))
        cells = [_mean_spread(v) for v in rates.values()]
        agreement = "" if corr is None else f"{corr:.2f}"
        for curve in ("deletion", "insertion"):
            per_review = torch.stack([r[3][curve] for r in runs]).mean(0)
            cell = f"{float(per_review.mean()):.3f}"
            if curve in first:
                lo, mid, hi = _paired_interval(per_review - first[curve])
                cell += f" ({mid:+.3f} [{lo:+.3f}, {hi:+.3f}])"
            else:
                first[curve] = per_review
            cells.append(cell)
        cells.insert(4, agreement)
        print(f"| {preset} | {' | '.join(cells)} | {seconds:.2f} |", flush=True)


def _run(explainer, tm, chosen, words_of, lex, batch_size, seed_base, spacing):
    """(hits per map, final scores per review, seconds, {"deletion", "insertion"}: AUC per
    review) for one run over ``chosen``."""
    rng = random.Random(0)
    hits = {"inputiba": 0.0, "stage-1 capacity": 0.0, "gan mask": 0.0, "random": 0.0}
    scores = []
    aucs: dict[str, list[torch.Tensor]] = {"deletion": [], "insertion": []}
    seconds = 0.0
    for start in range(0, len(chosen), batch_size):
        chunk = chosen[start : start + batch_size]
        ids, mask = tm.tokenizer(chunk)
        seeds = [seed_base + (start + i) * spacing for i in range(len(chunk))]
        t0 = time.perf_counter()
        res = explainer.attribute(ids, attention_mask=mask, seed=seeds, return_details=True)
        seconds += time.perf_counter() - t0
        maps = {"inputiba": res.attribution, "stage-1 capacity": res.feature_capacity,
                "gan mask": res.gan_mask}
        for curve, auc in _token_aucs(explainer, ids, mask, res).items():
            aucs[curve].append(auc)
        for i, text in enumerate(chunk):
            n = int(mask[i].sum())
            words = words_of(text)[:n]
            scores.append(res.attribution[i, :n].double())
            for name, m in maps.items():
                top = m[i, :n].argsort(descending=True)[:3].tolist()
                hits[name] += any(words[j].lower() in lex for j in top)
            hits["random"] += sum(any(w.lower() in lex for w in rng.sample(words, 3))
                                  for _ in range(100)) / 100
    return hits, scores, seconds, {k: torch.cat(v) for k, v in aucs.items()}


def _token_aucs(explainer, ids, mask, res) -> dict[str, torch.Tensor]:
    """{"deletion", "insertion"}: (B,) AUCs of the final scores (removed tokens: zero
    embeddings), both curves from one embedding pass."""
    from inputiba.core.layers import replace_output
    from inputiba.metrics.functional import token_perturbation_curve

    with torch.no_grad():
        emb = explainer.embedding_module(ids)

    def forward(e: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        with replace_output(explainer.embedding_module, lambda _: e):
            return explainer.model(torch.zeros(m.shape, dtype=ids.dtype), attention_mask=m)

    return {mode: token_perturbation_curve(forward, emb, res.targets, res.attribution, mask,
                                           mode=mode, model=explainer.model).auc
            for mode in ("deletion", "insertion")}


def _paired_interval(d: torch.Tensor) -> tuple[float, float, float]:
    """(low, mean, high): a 95% t-interval of the mean of paired differences ``d``."""
    from scipy import stats

    n = d.numel()
    mean = float(d.mean())
    half = float(stats.t.ppf(0.975, n - 1) * d.std() / n**0.5) if n > 1 else float("nan")
    return mean - half, mean, mean + half


def _seed_agreement(runs: list[list[torch.Tensor]]) -> float | None:
    """Mean Pearson correlation of one review's scores between two runs, over reviews and
    run pairs (reviews whose scores are constant in a run are left out); None for one run."""
    values = []
    for a in range(len(runs)):
        for b in range(a + 1, len(runs)):
            for x, y in zip(runs[a], runs[b], strict=True):
                if x.std() > 0 and y.std() > 0:
                    values.append(float(torch.corrcoef(torch.stack([x, y]))[0, 1]))
    return sum(values) / len(values) if values else None


def _mean_spread(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})"


if __name__ == "__main__":
    main()
