"""A small CNN for the CLI tests, loaded with ``--model tests/_tiny_model.py:factory``.

Deterministic weights (seeded), 64 x 64 input, five named classes: small enough that a whole
InputIBA run takes a second, real enough that every stage (feature bottleneck, GAN, input
bottleneck) runs on it.
"""

from __future__ import annotations

import torch
from torch import nn

from inputiba.models.image import Preprocess

CLASS_NAMES = ["sky", "fur", "cup", "metal", "leaf"]


def factory() -> tuple[nn.Module, Preprocess, list[str]]:
    """(model, preprocess, class names)."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(CLASS_NAMES)),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.dim() > 1 else 0.05))
    return net.eval(), Preprocess((64, 64), mean=(0.5,) * 3, std=(0.5,) * 3), CLASS_NAMES
