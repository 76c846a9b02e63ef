"""The floor of ``benchmarks/bench_core.py`` counts the network passes the stages really make."""

from __future__ import annotations

import collections
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

from inputiba import InputIBA
from inputiba.core import gan
from inputiba.modalities.image import ImageStages
from inputiba.models.small_cnn import small_cnn_32

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_core.py"


def _bench_core():
    spec = importlib.util.spec_from_file_location("bench_core", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("max_batch", [4, 64])
def test_pass_counts_match_the_stages(monkeypatch, max_batch):
    """Every pass of stage 1 (tail), stage 2 (head with and without gradients, the critic)
    and stage 3 (whole network), by chunk size, as the benchmark's floor counts them; with
    chunking (max_batch 4: partial chunks, the generator's recomputed passes) and without."""
    seen: collections.Counter = collections.Counter()

    def counting(name, kind_of):
        original = getattr(ImageStages, name)

        def wrapper(self, z, *args):
            seen[(kind_of(), z.shape[0])] += 1
            return original(self, z, *args)
        monkeypatch.setattr(ImageStages, name, wrapper)

    counting("feature_tail", lambda: "tail_fb")
    counting("gan_features", lambda: "head_fb" if torch.is_grad_enabled() else "head_f")
    counting("forward", lambda: "full_fb")
    critic_forward = gan.ImageCritic.forward

    def critic(self, feats):
        seen[("critic_fb", feats.shape[1])] += 1
        return critic_forward(self, feats)
    monkeypatch.setattr(gan.ImageCritic, "forward", critic)

    torch.manual_seed(0)
    net, _, _ = small_cnn_32()
    x = torch.randn(2, 3, 32, 32)
    ex = InputIBA(net.eval(), "features.1", preset="paper", feat_steps=2, feat_draws=3,
                  gan_epochs=2, gan_dataset_size=22, gan_subset_size=11, gan_batch_size=8,
                  gan_critic_iters=2, input_steps=2, input_draws=3, max_batch=max_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex.estimate([torch.randn(8, 3, 32, 32)], progress=False)
    seen.clear()
    ex.attribute(x, target=[1, 2])
    counted = _bench_core().pass_counts(ex.config, batch=2)
    expected = collections.Counter()
    for stage in counted.values():
        expected.update(stage)
    assert seen == expected
    # by hand: batches of 8, 8, 6 rows (22 samples); the generator trains on batches 0 and 2
    # (critic_iters 2), so the short batch gets the real, the fake and the generator's pass
    assert seen[("critic_fb", 6)] == 3 * 2 and seen[("critic_fb", 8)] == (2 + 3) * 2
