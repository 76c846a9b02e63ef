"""Text maps do not depend on batch neighbours or padding (issue 15, items 10 and 11)."""

from __future__ import annotations

import warnings

import pytest
import torch

from inputiba.core.gan import SequenceCritic
from inputiba.core.rng import SampleRNG
from inputiba.errors import ConfigError
from inputiba.modalities.text import TextInputIBA
from inputiba.models.text import LSTMSentimentClassifier

SMALL = dict(feat_steps=3, feat_draws=2, gan_epochs=1, gan_dataset_size=16, gan_subset_size=8,
             gan_batch_size=8, gan_critic_iters=2, input_steps=4, input_draws=2)


def _explainer() -> TextInputIBA:
    torch.manual_seed(0)
    model = LSTMSentimentClassifier(40, embed_dim=6, hidden_size=4).eval()
    ex = TextInputIBA(model, "lstm1", "embedding", preset="paper", **SMALL)
    ids = torch.randint(1, 40, (64, 12), generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex.estimate([ids], n_samples=None, progress=False)
    return ex


def test_a_text_gets_the_same_map_alone_and_beside_a_longer_text():
    ex = _explainer()
    short = torch.tensor([[5, 9, 2, 17, 3]])
    alone = ex.attribute(short, target=1, seed=7, return_details=True)
    batch = torch.zeros(2, 11, dtype=torch.long)
    batch[0, :5] = short[0]
    batch[1] = torch.arange(1, 12) * 3
    both = ex.attribute(batch, target=1, seed=[7, 8], return_details=True)
    torch.testing.assert_close(both.attribution[0, :5], alone.attribution[0])
    torch.testing.assert_close(both.gan_mask[0, :5], alone.gan_mask[0])
    torch.testing.assert_close(both.feature_capacity[0, :5], alone.feature_capacity[0])
    assert (both.attribution[0, 5:] == 0).all()


def test_token_noise_is_drawn_for_real_tokens_only():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1]]).bool()
    noise = SampleRNG([3, 3], token_mask=mask).randn(2, 5, 4)
    assert (noise[0][:, ~mask[0]] == 0).all() and (noise[1][:, ~mask[1]] == 0).all()
    # the same stream fills the real tokens, whichever side the padding is on
    torch.testing.assert_close(noise[0][:, mask[0]], noise[1][:, mask[1]])
    alone = SampleRNG([3]).randn(2, 3, 4)[0]
    torch.testing.assert_close(noise[0][:, :3], alone)


def test_the_sequence_critic_reads_real_tokens_whichever_side_the_padding_is():
    torch.manual_seed(0)
    feats = torch.randn(1, 4, 3, 5)
    right = torch.zeros(1, 6, 5)
    left = torch.full((1, 6, 5), 99.0)  # padding values the critic must never read
    critic_r = SequenceCritic(1, 5, torch.tensor([[1, 1, 1, 0, 0, 0]]))
    critic_l = SequenceCritic(1, 5, torch.tensor([[0, 0, 0, 1, 1, 1]]))
    critic_l.load_state_dict(critic_r.state_dict())
    fr = torch.cat([feats, right[:, None].expand(1, 4, 6, 5)[:, :, :3]], 2)
    fl = torch.cat([left[:, None].expand(1, 4, 6, 5)[:, :, :3], feats], 2)
    torch.testing.assert_close(critic_r(fr), critic_l(fl))
    lengths = SequenceCritic(1, 5, torch.tensor([3]))
    lengths.load_state_dict(critic_r.state_dict())
    torch.testing.assert_close(lengths(fr), critic_r(fr))


def test_text_ensemble_is_the_mean_of_its_members_and_ignores_neighbours():
    """ensemble=K: text i's scores are the mean of the single-seed scores of seeds s_i + k
    (an int seed: s_i = seed + i * K), as for images; the config's ``ensemble`` is the default."""
    ex = _explainer()
    batch = torch.zeros(2, 7, dtype=torch.long)
    batch[0, :5] = torch.tensor([5, 9, 2, 17, 3])
    batch[1] = torch.tensor([4, 8, 15, 16, 23, 1, 30])
    k = 3
    ens = ex.attribute(batch, target=[1, 0], seed=7, ensemble=k, return_details=True)
    assert ens.attribution.shape == (2, 7) and (ens.attribution[0, 5:] == 0).all()
    assert ens.losses["input"]["total"].shape[0] == 2 * k
    for i, t in enumerate([1, 0]):
        row = batch[[i]]
        members = [ex.attribute(row, target=t, seed=[7 + i * k + j], return_details=True)
                   for j in range(k)]
        torch.testing.assert_close(
            ens.attribution[i], torch.stack([m.attribution[0] for m in members]).mean(0))
        torch.testing.assert_close(
            ens.gan_mask[i], torch.stack([m.gan_mask[0] for m in members]).mean(0))
        assert not torch.allclose(members[0].attribution, members[1].attribution, atol=1e-4)
    # a batch neighbour does not change a text's ensemble (sequence seeds are the base seeds)
    alone = ex.attribute(batch[[1]], target=[0], seed=[7 + k], ensemble=k)
    torch.testing.assert_close(alone[0], ens.attribution[1])
    # ensemble_reduce="min": each token's lowest member score (padding stays 0); details: means
    ex.config = ex.config.replace(ensemble_reduce="min")
    low = ex.attribute(batch, target=[1, 0], seed=7, ensemble=k, return_details=True)
    members = [ex.attribute(batch[[1]], target=0, seed=[7 + k + j]) for j in range(k)]
    torch.testing.assert_close(low.attribution[1], torch.stack(members).amin(0)[0])
    torch.testing.assert_close(low.gan_mask, ens.gan_mask)
    ex.config = ex.config.replace(ensemble_reduce="mean")
    # the setting is the default K
    ex.config = ex.config.replace(ensemble=k)
    torch.testing.assert_close(ex.attribute(batch, target=[1, 0], seed=7), ens.attribution)
    for bad in (0, True, 1.5):  # inputiba's own error (a ValueError) naming the setting
        with pytest.raises(ConfigError, match=r"ensemble must be an integer >= 1"):
            ex.attribute(batch, ensemble=bad)


def test_text_ensemble_can_share_stage1():
    """ensemble_shared_stage1: a text's K runs share its first run's stage 1 (seed s_i);
    that run is the unshared single-seed run; the others differ from it; padding and batch
    neighbours change nothing."""
    ex = _explainer()
    ex.config = ex.config.replace(ensemble_shared_stage1=True)
    batch = torch.zeros(2, 7, dtype=torch.long)
    batch[0, :5] = torch.tensor([5, 9, 2, 17, 3])
    batch[1] = torch.tensor([4, 8, 15, 16, 23, 1, 30])
    k = 3
    ens = ex.attribute(batch, target=[1, 0], seed=7, ensemble=k, return_details=True)
    feat, inp = ens.losses["feature"]["total"], ens.losses["input"]["total"]
    assert feat.shape[0] == inp.shape[0] == 2 * k and (ens.attribution[0, 5:] == 0).all()
    torch.testing.assert_close(feat, feat[::k].repeat_interleave(k, dim=0))
    first = ex.attribute(batch[[0]][:, :5], target=1, seed=[7], ensemble=1,
                         return_details=True)
    torch.testing.assert_close(feat[0], first.losses["feature"]["total"][0])
    torch.testing.assert_close(inp[0], first.losses["input"]["total"][0])
    assert not torch.allclose(inp[0], inp[1])
    alone = ex.attribute(batch[[1]], target=[0], seed=[7 + k], ensemble=k)
    torch.testing.assert_close(alone[0], ens.attribution[1])


def test_text_gan_theta_init_normalized_uses_the_real_tokens_capacity():
    """gan_theta_init="normalized": the generator's token mask starts at the per-text
    normalised stage-1 capacity (clamped to [0.05, 0.95]), padding excluded: with no GAN steps
    the mask is that, its largest real token at 0.95."""
    from inputiba.core.functional import normalized_logits

    ex = _explainer()
    ex.config = ex.config.replace(gan_epochs=0, gan_theta_init="normalized")
    batch = torch.zeros(2, 7, dtype=torch.long)
    batch[0, :4] = torch.tensor([5, 9, 2, 17])
    batch[1] = torch.tensor([4, 8, 15, 16, 23, 1, 30])
    res = ex.attribute(batch, target=1, seed=3, return_details=True)
    valid = batch != 0
    cap = res.feature_capacity  # bits per token; the mask starts from its per-token mean
    want = torch.sigmoid(normalized_logits(cap)) * valid
    torch.testing.assert_close(res.gan_mask, want)
    assert torch.allclose(res.gan_mask.amax(1), torch.tensor([0.95, 0.95]))
    assert (res.gan_mask[0, 4:] == 0).all()
    # alone, the short text starts from the same mask (padding never enters the maximum)
    alone = ex.attribute(batch[[0], :4], target=1, seed=[3], return_details=True)
    torch.testing.assert_close(alone.gan_mask[0], res.gan_mask[0, :4])
    ex.config = ex.config.replace(gan_theta_init="capacity")
    plain = ex.attribute(batch, target=1, seed=3, return_details=True)
    dims = ex.statistics["lstm1"].shape[0]  # "capacity": bits per feature element as logits
    torch.testing.assert_close(plain.gan_mask, torch.sigmoid(plain.feature_capacity / dims) * valid)
    assert not torch.allclose(plain.gan_mask, res.gan_mask, atol=1e-2)
