"""A CIFAR-style small CNN for 32 x 32 images (the original code's CIFAR-10 setup).

``inputiba.models.small_cnn:small_cnn_32`` is the ``model.name`` of the shipped ``small_cnn_32``
configuration; train it yourself and give the state dict as ``model.weights`` (without
weights it has seeded random ones, which only suit trying the pipeline out).
"""

from __future__ import annotations

import torch
from torch import nn

from inputiba.models.image import Preprocess

__all__ = ["SmallCNN", "small_cnn_32", "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class SmallCNN(nn.Module):
    """Three conv blocks (32 -> 16 -> 8 -> 4 pixels) and a linear head.

    ``features.0`` / ``features.1`` / ``features.2``: the blocks' outputs, (B, 32, 16, 16),
    (B, 64, 8, 8), (B, 128, 4, 4) for a (B, 3, 32, 32) input; ``features.1`` is the
    bottleneck layer of the shipped configuration.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def small_cnn_32(num_classes: int = 10, seed: int = 0) -> tuple[nn.Module, Preprocess, list[str]]:
    """(model in eval mode with seeded weights, 32 x 32 CIFAR preprocessing, class names)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = SmallCNN(num_classes)
    names = CIFAR10_CLASSES if num_classes == 10 else [str(i) for i in range(num_classes)]
    return net.eval(), Preprocess((32, 32), CIFAR10_MEAN, CIFAR10_STD), names
