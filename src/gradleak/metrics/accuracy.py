"""A model's test accuracy: what training (and a defense) buys, next to what it leaks."""

from __future__ import annotations

import torch
from torch import nn


def test_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 512) -> float:
    """Top-1 accuracy of `model` in eval mode on `images` (model space); the caller's mode is restored."""
    was = model.training
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for i in range(0, images.shape[0], batch):
                correct += int((model(images[i : i + batch]).argmax(1) == labels[i : i + batch]).sum())
    finally:
        model.train(was)
    return correct / images.shape[0]


test_accuracy.__test__ = False  # not a pytest test, despite its name

__all__ = ["test_accuracy"]
