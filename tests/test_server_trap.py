"""Trap weights (Boenisch et al. 2023): units that fire for few inputs, and their read-out."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_lenet
from torch import nn

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.errors import GradleakError
from gradleak.records import Assumption, AttackerKnowledge, LabelKnowledge
from gradleak.server import parse_server, trap_expected

SHAPE = (3, 4, 4)


def _mlp(units=400):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, units), nn.ReLU(), nn.Linear(units, 4))


def test_trapped_samples_are_recovered_exactly():
    n = 8
    server = parse_server(f"trap:fire={1 / n}").build(_mlp(), SHAPE, seed=0)
    gen = torch.Generator().manual_seed(1)
    images, labels = torch.randn(n, *SHAPE, generator=gen), torch.randint(0, 4, (n,), generator=gen)
    # the units really fire for about `fire` of inputs
    layer = server.model[1]
    fresh = torch.randn(4000, 48, generator=gen)
    assert abs(float((layer(fresh) > 0).float().mean()) - 1 / n) < 0.02
    update = simulate_client(server.model, images, labels)
    knowledge = AttackerKnowledge(num_samples=n, input_shape=SHAPE, num_classes=4, server=server.spec,
                                  label_knowledge=LabelKnowledge.GIVEN, labels=labels)
    rec = ATTACKS.create("trap", {}).reconstruct(server.model, update, knowledge)
    d = torch.cdist(images.flatten(1), rec.data.flatten(1)).min(1).values / images.flatten(1).norm(dim=1)
    # which samples some unit caught alone
    fired = (layer(images.flatten(1)) > 0)
    alone = fired[:, fired.sum(0) == 1].any(1)
    assert alone.sum() >= 6
    assert (d[alone] < 1e-4).all()
    assert rec.assumptions == (Assumption.BASIC, Assumption.MALICIOUS)
    assert 0.9 < trap_expected(400, 1 / n, n) <= 1.0


def test_trap_refuses_a_first_layer_that_is_not_fully_connected():
    with pytest.raises(GradleakError, match=r"fully connected first layer.*layer '0' is Conv2d"):
        parse_server("trap").build(tiny_lenet(channels=3, size=4, classes=4), SHAPE)
    nobias = nn.Sequential(nn.Flatten(), nn.Linear(48, 8, bias=False), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(GradleakError, match=r"layer '1' is Linear without bias"):
        parse_server("trap").build(nobias, SHAPE)
    with pytest.raises(GradleakError, match="fire must be"):
        parse_server("trap:fire=0.7")
