"""Shared fixtures: a small CNN trained here on a real shipped dataset (scikit-learn digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


class DigitsCNN(nn.Module):
    """A small CNN for 1 x 32 x 32 digit images; ``features.4`` is a 32 x 8 x 8 layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x).flatten(1)))


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = (x - 0.3) / 0.4
    return x, torch.tensor(d.target)


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): real 8x8 digits, upsampled to 32x32, normalised."""
    x, y = _digits()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    tr, te = perm[:1400], perm[1400:]
    return x[tr], y[tr], x[te], y[te]


@pytest.fixture(scope="session")
def digits_model(digits) -> nn.Module:
    """DigitsCNN trained for a few epochs (about 97% test accuracy), in eval mode."""
    x, y, xt, yt = digits
    torch.manual_seed(0)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _epoch in range(4):
        perm = torch.randperm(len(x))
        model.train()
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.9, f"the digits CNN did not train (test accuracy {acc:.3f})"
    return model


@pytest.fixture(scope="session")
def digits_stats(digits, digits_model):
    from inputiba import estimate_layer_statistics

    x = digits[0]
    return estimate_layer_statistics(
        digits_model, "features.4", torch.split(x, 200), progress=False
    )


def np_seed() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module (restored after): its small models gain nothing
    from more, and they would oversubscribe the shared cores. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def stats_cache(tmp_path_factory):
    """A private statistics cache (``INPUTIBA_CACHE``) shared by the runs of a test module."""
    path = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("INPUTIBA_CACHE", str(path))
    yield path
    mp.undo()


def one_error_line(err: str, *words: str) -> str:
    """The single ``inputiba: error:`` line of a CLI's stderr ``err`` (no traceback), which
    contains every one of ``words``."""
    lines = [ln for ln in err.splitlines() if ln.startswith("inputiba: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def error_line():
    """:func:`one_error_line`, for tests of the CLI's one-line errors."""
    return one_error_line
