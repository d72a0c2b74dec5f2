"""The digits CNN of kondense's examples, defined in code: what a user's package looks like when
its weights are saved with safetensors and kondense builds the network by calling `build_cnn`.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two conv blocks and a linear head: `pixel_values` [N, 1, 8, 8] -> 10 class logits."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(pixel_values))


def build_cnn(width: int = 32) -> DigitsCNN:
    """spec.model.architecture: "digits_nets:build_cnn", architectureArgs: {width: 32}."""
    return DigitsCNN(width)
