import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread():
    # steadier timings and no oversubscription when pytest-xdist is not used
    torch.set_num_threads(1)
    yield


def tiny_lenet(channels: int = 3, size: int = 16, classes: int = 10, seed: int = 0) -> nn.Module:
    """A DLG-style sigmoid CNN small enough for fast tests."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(channels, 8, 5, 2, 2), nn.Sigmoid(),
        nn.Conv2d(8, 8, 5, 1, 2), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(8 * (size // 2) ** 2, classes),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=gen) - 0.5)
    return model


def tiny_bn_net(classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, classes))
