"""Class fishing (Wen et al. 2022): only the target class reaches the layers below the last."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_lenet
from torch import nn

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.errors import GradleakError
from gradleak.records import Assumption, AttackerKnowledge
from gradleak.server import parse_server

SHAPE = (3, 8, 8)


def test_below_the_last_layer_the_batch_gradient_is_the_targets_alone():
    model = tiny_lenet(channels=3, size=8, classes=4)
    server = parse_server("fishing:target=2").build(model, SHAPE)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(6, *SHAPE, generator=gen)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])  # one sample of the target class
    batch = simulate_client(server.model, images, labels)
    alone = simulate_client(server.model, images[2:3], labels[2:3])
    for name, b, a in zip(batch.names, batch.tensors, alone.tensors):
        if not name.startswith("5."):  # the last layer
            assert torch.allclose(6 * b, a, atol=1e-6, rtol=1e-4), name
    # on the honest model the batch gradient is nothing like the target's
    honest = [t for n, t in zip(batch.names, simulate_client(model, images, labels).tensors) if n == "0.weight"][0]
    honest_alone = simulate_client(model, images[2:3], labels[2:3]).tensors[0]
    assert torch.nn.functional.cosine_similarity(honest.flatten(), honest_alone.flatten(), dim=0) < 0.9
    assert server.target == 2 and server.layer == "5"
    assert model[5].weight.abs().sum(1).min() > 0  # the caller's model is untouched


def test_the_readout_attacks_the_target_as_one_sample():
    model = tiny_lenet(channels=3, size=8, classes=4)
    server = parse_server("fishing:target=1").build(model, SHAPE)
    images, labels = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 3])
    update = simulate_client(server.model, images, labels)
    knowledge = AttackerKnowledge(num_samples=3, input_shape=SHAPE, num_classes=4, server=server.spec)
    rec = ATTACKS.create("fishing", {"iterations": 5}).reconstruct(server.model, update, knowledge)
    assert rec.data.shape == (3, *SHAPE) and rec.data[1:].abs().sum() == 0 and rec.labels.tolist() == [1, 1, 1]
    assert Assumption.MALICIOUS in rec.assumptions
    with pytest.raises(GradleakError, match=r"keeps one class's row; layer '5' does not"):
        ATTACKS.create("fishing", {"iterations": 5}).reconstruct(model, simulate_client(model, images, labels),
                                                                 knowledge)


def test_fishing_refuses_a_last_layer_it_cannot_change():
    conv_last = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(GradleakError, match=r"fully connected last layer with a bias; layer '0' is Conv2d"):
        parse_server("fishing").build(conv_last, SHAPE)
    with pytest.raises(GradleakError, match="target must be a class index below 4"):
        parse_server("fishing:target=7").build(tiny_lenet(channels=3, size=8, classes=4), SHAPE)
