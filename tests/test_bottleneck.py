"""Chunked backward passes: exact gradients, and each chunk only touches its own rows."""

import pytest
import torch

from inputiba.core.bottleneck import backward_in_chunks


def test_backward_in_chunks_matches_one_pass_and_gives_each_chunk_its_own_leaf():
    torch.manual_seed(0)
    w = torch.randn(5, 3, requires_grad=True)
    a = torch.randn(10, 5)
    lin = torch.nn.Linear(3, 2)
    seen = []

    def fn(inp, rows):
        seen.append(inp)
        return torch.tanh(lin(inp)) * (rows.start + 1)

    inputs = a @ w
    per_row = backward_in_chunks(fn, inputs, 4, loss=lambda out, _rows: out.pow(2).sum(1))
    grad_chunked = w.grad.clone()
    w.grad = None
    ref = (torch.tanh(lin(a @ w)) * torch.tensor([1.0] * 4 + [5.0] * 4 + [9.0] * 2)[:, None])
    ref.pow(2).sum(1).sum().backward()
    torch.testing.assert_close(grad_chunked, w.grad)
    torch.testing.assert_close(per_row, ref.pow(2).sum(1).detach())
    assert [t.shape[0] for t in seen] == [4, 4, 2]
    # regression: chunks used to be views of one whole-batch leaf, so every chunk's backward
    # wrote and summed a zero-filled gradient of the whole batch (quadratic in the batch size)
    leaves = [t.grad_fn.next_functions[0][0].variable for t in seen]  # fn gets a leaf's copy
    assert all(v.is_leaf and v.grad is not None and v.grad.shape == t.shape
               for v, t in zip(leaves, seen, strict=True))


def test_chunks_may_be_modified_in_place_by_the_network():
    """Regression: VGG16 failed in stage 1, whose tail starts with ReLU(inplace=True)."""
    torch.manual_seed(0)
    a = torch.randn(6, 5)
    w = torch.randn(5, 3, requires_grad=True)
    backward_in_chunks(lambda inp, _rows: torch.relu_(inp) * 2, a @ w, 4,
                       loss=lambda out, _rows: out.sum(1))
    chunked, w.grad = w.grad.clone(), None
    (torch.relu(a @ w) * 2).sum().backward()
    torch.testing.assert_close(chunked, w.grad)


def _fit_input(model, x, target, steps, average, seed=0):
    from inputiba.core.bottleneck import fit_input_bottleneck
    from inputiba.core.config import BottleneckSettings
    from inputiba.core.rng import SampleRNG

    settings = BottleneckSettings(beta=5.0, steps=steps, lr=1.0, draws=2, sigma=1.0,
                                  average=average)
    prior = torch.full_like(x, 0.5)
    return fit_input_bottleneck(lambda inp, _s: model(inp), x, target, prior,
                                SampleRNG([seed + i for i in range(x.shape[0])]), settings)


def test_input_average_is_the_mean_lambda_of_the_last_iterates(digits, digits_model):
    """average=N: stage 3's lambda is the smoothed mean of sigmoid(alpha) over the last N Adam
    iterates. A run of j steps is the first j steps of a longer run with the same seeds (every
    step draws the same noise from each sample's stream), so runs of s-N+1..s steps give the
    iterates."""
    x = digits[2][:2]
    target = digits_model(x).argmax(1)
    s, n = 8, 3
    last = _fit_input(digits_model, x, target, s, 0)
    # average=1 is the last iterate (up to the logit's eps)
    one = _fit_input(digits_model, x, target, s, 1)
    torch.testing.assert_close(one.lamb, last.lamb, atol=1e-5, rtol=0)
    # the prefix property the iterates rely on: s-1 steps then one more is the s-step run
    shorter = _fit_input(digits_model, x, target, s - 1, 0)
    torch.testing.assert_close(shorter.losses["total"], last.losses["total"][:, :s - 1])
    iterates = [torch.sigmoid(_fit_input(digits_model, x, target, j, 0).alpha)
                for j in range(s - n + 1, s + 1)]
    assert not torch.allclose(iterates[0], iterates[-1], atol=1e-3)  # they do move
    avg = _fit_input(digits_model, x, target, s, n)
    from inputiba.core.bottleneck import _smooth

    want = _smooth(torch.stack(iterates).mean(0), 1.0)
    torch.testing.assert_close(avg.lamb, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.sigmoid(avg.alpha), torch.stack(iterates).mean(0),
                               atol=1e-5, rtol=0)
    assert not torch.allclose(avg.lamb, last.lamb, atol=1e-3)
    # N beyond the steps averages all of them; the losses are the same run's either way
    all_steps = _fit_input(digits_model, x, target, 2, 10)
    first2 = [torch.sigmoid(_fit_input(digits_model, x, target, j, 0).alpha) for j in (1, 2)]
    torch.testing.assert_close(torch.sigmoid(all_steps.alpha), torch.stack(first2).mean(0),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(avg.losses["total"], last.losses["total"])


def test_cosine_schedule_anneals_stage_3s_steps():
    """input_lr_schedule="cosine": Adam's step k is lr * (1 + cos(pi k / steps)) / 2. With a
    model that ignores its input only the information loss acts, its gradient keeps its sign,
    and Adam moves every logit by about the learning rate a step: the total movement is the
    sum of the step sizes (about steps * lr when constant, about half of it annealed)."""
    import math

    from inputiba.core.bottleneck import fit_input_bottleneck
    from inputiba.core.config import BottleneckSettings, InputIBAConfig
    from inputiba.core.rng import SampleRNG
    from inputiba.errors import ConfigError

    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    steps, lr = 10, 0.05

    def moved(schedule: str) -> torch.Tensor:
        settings = BottleneckSettings(beta=5.0, steps=steps, lr=lr, draws=2, sigma=0.0,
                                      schedule=schedule)
        res = fit_input_bottleneck(lambda inp, _s: inp.flatten(1)[:, :3] * 0,
                                   x, torch.tensor([0, 1]), torch.full_like(x, 0.5),
                                   SampleRNG([0, 1]), settings)
        return settings.init_alpha - res.alpha

    constant, cosine = moved("constant"), moved("cosine")
    assert torch.allclose(constant, torch.full_like(constant, steps * lr), rtol=0.15)
    want = lr * sum((1 + math.cos(math.pi * k / steps)) / 2 for k in range(steps))
    assert torch.allclose(cosine, torch.full_like(cosine, want), rtol=0.15)
    assert (cosine < 0.65 * constant).all()
    cfg = InputIBAConfig(input_lr_schedule="cosine")
    assert cfg.input.schedule == "cosine" and InputIBAConfig().input.schedule == "constant"
    with pytest.raises(ConfigError, match="input_lr_schedule"):
        InputIBAConfig(input_lr_schedule="linear")
