import math

import pytest
import torch
from conftest import tiny_lenet
from torch import nn

from gradleak.client.simulate import simulate_client
from gradleak.defenses import DEFENSES, parse_defense
from gradleak.defenses.base import ClientBatch
from gradleak.defenses.soteria import (
    Soteria,
    pruned_count,
    representation_scores,
    soteria_mask,
)
from gradleak.errors import GradleakError
from gradleak.records import LocalTraining, Protocol
from gradleak.registry import Entry


def _batch(size=8, n=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen), torch.tensor([1, 3, 5, 7][:n])


def _setup(size=8, n=2, training=LocalTraining()):
    model = tiny_lenet(size=size)
    images, labels = _batch(size, n)
    update = simulate_client(model, images, labels, training)
    return model, update, ClientBatch(model, images, labels, training)


def test_scores_hand_checked_on_a_linear_representation():
    # representation r = A x (no bias): d r_i / d x is the row A_i, so its norm is known
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.Linear(3, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[3.0, 4, 0, 0], [0, 0, 1, 0], [0, 0, 0, 2]]))
    x = torch.tensor([[0.0, 0, 0, 0], [1, 0, 1, 1], [-1, 0, 0, 0]]).reshape(3, 1, 2, 2)
    # r = [0, 0, 0], [3, 1, 2], [-3, 0, 0]; norms 5, 1, 2; score = sum_n norm / (|r| + 0.1)
    expected = torch.tensor([5 / 0.1 + 5 / 3.1 + 5 / 3.1, 1 / 0.1 + 1 / 1.1 + 1 / 0.1, 2 / 0.1 + 2 / 2.1 + 2 / 0.1])
    scores = representation_scores(model, "2", x)
    assert torch.allclose(scores, expected, rtol=1e-5)
    # default layer: the first Linear, whose input is the flattened image (input-gradient norm 1)
    first = (1 / (x.flatten(1).abs() + 0.1)).sum(0)
    assert torch.allclose(representation_scores(model, None, x), first, rtol=1e-5)


def test_mask_prunes_the_smallest_scores_with_documented_rounding():
    scores = torch.tensor([3.0, 1.0, 2.0, 1.0, 5.0])
    keep = soteria_mask(scores, 0.5)  # round(2.5) = 3, halves up; the tie at 1.0 goes by index
    assert keep.tolist() == [True, False, False, False, True]
    assert soteria_mask(scores, 0.0).all()
    assert [pruned_count(r, 10) for r in (0.0, 0.04, 0.05, 0.6, 0.94, 0.99)] == [0, 0, 1, 6, 9, 9]


def test_transform_zeroes_exactly_the_low_score_columns_and_nothing_else():
    model, update, client = _setup()
    out = Soteria(rate=0.6).transform(update, client=client)
    index = update.names.index("5.weight")
    d = update.tensors[index].shape[1]
    keep = soteria_mask(representation_scores(model, "5", client.images), 0.6)
    zeroed = (out.tensors[index] == 0).all(0)
    assert int(zeroed.sum()) == round(0.6 * d) == int((~keep).sum())
    assert torch.equal(zeroed, ~keep)
    assert torch.equal(out.tensors[index][:, keep], update.tensors[index][:, keep])
    for i, (before, after) in enumerate(zip(update.tensors, out.tensors)):
        if i != index:
            assert torch.equal(before, after)
    assert out.defenses == ("soteria:rate=0.6",)


def test_rate_zero_is_the_identity_bit_for_bit():
    _, update, client = _setup()
    out = Soteria(rate=0.0).transform(update, client=client)
    assert all(torch.equal(a, b) for a, b in zip(update.tensors, out.tensors))


def test_inputs_and_model_are_not_mutated():
    model, update, client = _setup()
    tensors = [t.clone() for t in update.tensors]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images = client.images.clone()
    model.train()
    Soteria(rate=0.5, layer="5").transform(update, client=ClientBatch(model, client.images, client.labels))
    assert all(torch.equal(a, b) for a, b in zip(tensors, update.tensors))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(images, client.images) and model.training
    assert all(p.grad is None for p in model.parameters())


def test_fedavg_delta_is_pruned_the_same_way():
    training = LocalTraining(protocol=Protocol.FEDAVG, epochs=2, batch_size=1)
    model, update, client = _setup(training=training)
    out = Soteria(rate=0.25).transform(update, client=client)
    index = update.names.index("5.weight")
    assert int((out.tensors[index] == 0).all(0).sum()) == round(0.25 * update.tensors[index].shape[1])


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, math.nan, True, "0.5"])
def test_bad_rate_raises(rate):
    with pytest.raises(GradleakError, match=r"rate must be a number in \[0, 1\)"):
        Soteria(rate=rate)


@pytest.mark.parametrize("layer, found", [("nope", "not a module"), ("0", "a Conv2d")])
def test_unknown_or_non_linear_layer_raises_listing_linear_layers(layer, found):
    _, update, client = _setup()
    with pytest.raises(GradleakError, match=rf"layer must name an nn.Linear.*{found}.*Linear layers: '5'"):
        Soteria(layer=layer).transform(update, client=client)
    with pytest.raises(GradleakError, match="layer must be a module name"):
        Soteria(layer=[5])


def test_needs_the_client_batch_and_a_matching_model():
    _, update, client = _setup()
    with pytest.raises(GradleakError, match="client"):
        Soteria().transform(update)
    other = ClientBatch(nn.Sequential(nn.Flatten(), nn.Linear(192, 10)), client.images, client.labels)
    with pytest.raises(GradleakError, match="names do not match"):
        Soteria().transform(update, client=other)


def test_representation_must_be_flat():
    model = nn.Sequential(nn.Linear(4, 4), nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(GradleakError, match=r"\(batch, features\)"):
        representation_scores(model, "0", torch.rand(2, 4, 4))


@pytest.mark.parametrize("defense, spec", [
    (Soteria(), "soteria:rate=0.6"),
    (Soteria(0.25, layer=5), "soteria:rate=0.25,layer=5"),
    (Soteria(0.5, layer="7.1"), "soteria:rate=0.5,layer=7.1"),
    (Soteria(0.5, layer="features.fc"), "soteria:rate=0.5,layer=features.fc"),
])
def test_spec_round_trips(monkeypatch, defense, spec):
    if "soteria" not in DEFENSES:  # registered by gradleak.defenses once wired in
        monkeypatch.setitem(DEFENSES._entries, "soteria", Entry("soteria", Soteria, "test"))
    assert defense.spec() == spec
    assert parse_defense(spec).params() == defense.params()
    assert parse_defense("soteria:layer=5").layer == "5"
