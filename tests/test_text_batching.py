"""Text maps do not depend on batch neighbours or padding (issue 15, items 10 and 11)."""

from __future__ import annotations

import warnings

import torch

from inputiba.core.gan import SequenceCritic
from inputiba.core.rng import SampleRNG
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
