"""Agreement with Quantus (an independent implementation) where the definitions match.

The model is a small CNN trained here on scikit-learn's 8 x 8 digits (real data, seconds).

Definitional differences, and how each comparison controls for them:

* Sensitivity-N. Quantus 0.6 removes the top-``n`` attributed features (nested, deterministic,
  ``n = 1 .. 80%`` of the features) and correlates, for each ``n``, the attribution sum with the
  output drop *across the images of the batch*. Ancona et al. and the paper (our
  :func:`sensitivity_n`) draw 100 *random* subsets of each size and correlate across the
  subsets *within one image*. Both rest on the same measurement, (attribution summed over a
  subset, drop of the target output when the subset is set to a baseline); the test feeds
  Quantus' subsets to our :func:`subset_output_drops` and correlates across the batch as
  Quantus does. Quantus 0.6 also pairs the *cumulative* drop with the attribution of the features
  removed at the latest step only (not of all ``n`` removed); the test rebuilds that pairing from
  our subset sums (their step differences). Quantus' "black" baseline is each image's minimum; ``abs`` / ``normalise``
  are switched off and logits are used on both sides (our sensitivity-N default).
* Model-parameter randomisation. Quantus' MPRT walks the modules that have
  ``reset_parameters``, top down, cascading, and re-initialises each with ``reset_parameters``
  after ``torch.manual_seed(seed + 1)``; ours defaults to the paper's scheme (Xavier convs,
  N(0, 0.05) linears, zero biases, BatchNorm reset). The test passes Quantus' re-initialisation
  to :func:`sanity_check` and compares Spearman per layer (Quantus' ``abs`` and max-normalisation
  leave Spearman unchanged for the non-negative saliency maps used here).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from inputiba.metrics import functional as MF

quantus = pytest.importorskip("quantus")
pytestmark = pytest.mark.filterwarnings("ignore:The settings for perturbing:UserWarning")


class DigitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0 * 2 - 1
    y = torch.tensor(d.target)
    net = DigitNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(4):
        perm = torch.randperm(1500)
        for i in range(0, 1500, 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    acc = (net(x[1500:]).argmax(1) == y[1500:]).float().mean().item()
    assert acc > 0.85, acc  # a real classifier
    return net, x[1500:1516].clone(), y[1500:1516].clone()


def saliency(model: nn.Module, inputs, targets, **_kw) -> np.ndarray:
    """|gradient| of the target logit, (B, 1, H, W); accepts numpy (Quantus) or tensors."""
    x, y = inputs, targets
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long()
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x).gather(1, y.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(out, x)
    return g.abs().detach().numpy()


def test_sensitivity_n_agrees_with_quantus(digits):
    net, x, y = digits
    a = saliency(net, x, y) + 1e-6 * np.random.default_rng(0).random((16, 1, 8, 8))  # no ties
    metric = quantus.SensitivityN(
        features_in_step=1,
        n_max_percentage=0.8,
        abs=False,
        normalise=False,
        perturb_baseline="black",
        return_aggregate=False,
        disable_warnings=True,
    )
    q = np.asarray(
        metric(net, x.numpy(), y.numpy(), a_batch=a.astype(np.float32), softmax=False, device="cpu")
    )
    n_max = int(0.8 * 64)
    assert q.shape == (n_max,)
    ranks = MF.pixel_ranks(torch.as_tensor(a[:, 0]).reshape(16, -1))
    ks = torch.arange(1, n_max + 1)
    masks = ranks[:, None, :] < ks[None, :, None]  # (B, n, 64): the top-k features
    black = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
    sums, drops = MF.subset_output_drops(
        net, x, y, torch.as_tensor(a.astype(np.float32)), masks, baseline=black, score="logit"
    )
    # Quantus 0.6 sums the attribution of the features removed *at step n only* (the n-th
    # feature), while its drop is cumulative (all n removed); rebuild that from our subset sums
    step_sums = torch.diff(sums, dim=1, prepend=torch.zeros(16, 1))
    ours = MF.pearson(step_sums.T, drops.T).numpy()  # across the batch, per n, as Quantus
    np.testing.assert_allclose(ours, q, atol=2e-4)
    assert np.isfinite(ours).all() and np.abs(ours).max() > 0.2  # a non-trivial comparison
    # the Ancona definition (cumulative sums) is a different number: Quantus is not a copy of it
    assert np.abs(MF.pearson(sums.T, drops.T).numpy() - q).max() > 0.05


def test_model_parameter_randomisation_agrees_with_quantus(digits):
    net, x, y = digits
    x, y = x[:6], y[:6]
    seed = 42
    metric = quantus.MPRT(
        layer_order="top_down",
        seed=seed,
        return_aggregate=False,
        disable_warnings=True,
    )
    q = metric(net, x.numpy(), y.numpy(), a_batch=None, explain_func=saliency, device="cpu")
    layers = [n for n in q if n != "original"]
    assert layers == MF.randomization_layers(net) == ["fc2", "fc1", "conv2", "bn1", "conv1"]

    def quantus_reinit(module: nn.Module) -> None:
        torch.manual_seed(seed + 1)
        module.reset_parameters()

    ours = MF.sanity_check(net, x, y, saliency, layers=layers, reinit=quantus_reinit)
    for j, name in enumerate(layers):
        np.testing.assert_allclose(ours.spearman[:, j], q[name], atol=1e-6, err_msg=name)
    # the original maps against themselves: Spearman 1 in Quantus' "original" entry
    np.testing.assert_allclose(q["original"], 1.0, atol=1e-6)
    # and saliency on a real model fails to stay the same once layers are randomised
    assert ours.spearman[:, -1].mean() < 0.8
