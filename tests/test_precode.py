import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_lenet
from torch import nn

from gradleak.client.simulate import simulate_client
from gradleak.errors import GradleakError
from gradleak.models import build_model
from gradleak.models.precode import (
    VariationalBottleneck,
    model_regularization,
    reseed_noise,
    with_precode,
)


def _images(n=2, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_wrapping_keeps_shape_and_weights_and_leaves_the_caller_alone():
    base = tiny_lenet()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    wrapped = with_precode(base, k=8)
    x = _images()
    assert wrapped(x).shape == base(x).shape == (2, 10)
    assert isinstance(base[5], nn.Linear) and isinstance(wrapped[5][0], VariationalBottleneck)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())
    state = wrapped.state_dict()
    renamed = {k.replace("5.", "5.1.") if k.startswith("5.") else k: v for k, v in before.items()}
    assert all(torch.equal(state[k], v) for k, v in renamed.items())
    assert wrapped[5][0].encoder.in_features == 512 and wrapped[5][0].decoder.out_features == 512


def test_named_classifier_and_errors():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    wrapped = with_precode(model, k=4, classifier="1")
    assert isinstance(wrapped[1][0], VariationalBottleneck) and isinstance(wrapped[3], nn.Linear)
    with pytest.raises(GradleakError, match=r"classifier must name an nn.Linear.*'nope'.*'1', '3'"):
        with_precode(model, classifier="nope")
    with pytest.raises(GradleakError, match="no nn.Linear"):
        with_precode(nn.Conv2d(1, 1, 3))
    with pytest.raises(GradleakError, match="option k must be a positive integer"):
        with_precode(model, k=0)
    with pytest.raises(GradleakError, match="option beta must be"):
        with_precode(model, beta=-1.0)


def test_kl_matches_the_closed_form_on_a_hand_case():
    vb = VariationalBottleneck(2, k=1, beta=0.5)
    with torch.no_grad():
        vb.encoder.weight.zero_()  # mean and std no longer depend on x
        vb.encoder.bias.copy_(torch.tensor([1.0, math.log(math.e**2 - 1)]))  # mu = 1, softplus -> std = 2
    out = vb(torch.rand(3, 2))
    eps = torch.randn(3, 1, generator=torch.Generator().manual_seed(0))  # the VB's stream, seed 0
    assert torch.allclose(out, vb.decoder(1 + 2 * eps))  # z = mu + std * eps
    expected = 0.5 * (1 + 4 - 1) - math.log(2)  # 0.5 (mu^2 + s^2 - 1) - log s
    assert vb.kl.item() == pytest.approx(expected, rel=1e-6)
    assert vb.regularization().item() == pytest.approx(0.5 * expected, rel=1e-6)


def test_kl_is_non_negative_and_zero_at_the_prior():
    vb = VariationalBottleneck(6, k=3)
    vb(torch.randn(4, 6))
    assert vb.kl.item() >= 0
    with torch.no_grad():
        vb.encoder.weight.zero_()
        vb.encoder.bias.copy_(torch.tensor([0.0] * 3 + [math.log(math.e - 1)] * 3))  # mu = 0, std = 1
    vb(torch.randn(4, 6))
    assert abs(vb.kl.item()) < 1e-6


def test_noise_is_reproducible_under_reseed():
    model = with_precode(tiny_lenet(), k=8, seed=3)
    x = _images()
    reseed_noise(model, 1)
    first = model(x)
    reseed_noise(model, 1)
    assert torch.equal(model(x), first)
    reseed_noise(model, 2)
    assert not torch.allclose(model(x), first)
    assert not torch.allclose(model(x), model(x))  # fresh eps per pass


def test_without_sampling_the_output_is_deterministic_and_uses_the_mean():
    vb = VariationalBottleneck(5, k=3, sample=False)
    x = torch.randn(4, 5)
    mu = vb.encoder(x)[:, :3]
    assert torch.equal(vb(x), vb(x))
    assert torch.allclose(vb(x), vb.decoder(mu))


def test_samples_in_eval_mode_so_client_updates_depend_on_the_noise():
    model = with_precode(tiny_lenet(), k=8).eval()
    x, y = _images(), torch.tensor([1, 2])
    same = [simulate_client(model, x, y, seed=3).tensors[0] for _ in range(2)]
    assert torch.equal(*same)  # the client seeds the bottleneck's noise from its own seed
    reseed_noise(model, 7)  # ... whatever the caller's stream
    assert torch.equal(simulate_client(model, x, y, seed=3).tensors[0], same[0])
    assert not torch.equal(simulate_client(model, x, y, seed=4).tensors[0], same[0])


def test_loss_plus_regularization_backpropagates_into_the_bottleneck():
    model = with_precode(tiny_lenet(), k=8, beta=1e-3)
    assert model_regularization(tiny_lenet()).item() == 0.0
    loss = F.cross_entropy(model(_images()), torch.tensor([1, 2])) + model_regularization(model)
    loss.backward()
    vb = model[5][0]
    assert model_regularization(model).item() == pytest.approx(1e-3 * vb.kl.item())
    for p in (vb.encoder.weight, vb.encoder.bias, vb.decoder.weight, model[0].weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_registered_factory_wraps_the_seeded_base():
    shape = (3, 16, 16)
    wrapped = build_model("precode", num_classes=4, input_shape=shape, seed=5, k=16,
                          base_options={"activation": "relu"})
    base = build_model("lenet", num_classes=4, input_shape=shape, seed=5, activation="relu")
    state = wrapped.state_dict()
    assert all(torch.equal(state[k.replace("7.", "7.1.")], v) for k, v in base.state_dict().items())
    assert isinstance(wrapped[7][0], VariationalBottleneck) and wrapped[7][0].k == 16
    again = build_model("precode", num_classes=4, input_shape=shape, seed=5, k=16,
                        base_options={"activation": "relu"})
    x = torch.rand(2, *shape)
    assert torch.equal(wrapped(x), again(x))
    with pytest.raises(GradleakError, match=r"does not take \['depth'\].*activation='sigmoid'"):
        build_model("precode", num_classes=4, input_shape=shape, base_options={"depth": 3})
    with pytest.raises(GradleakError, match="unknown model"):
        build_model("precode", num_classes=4, input_shape=shape, base="nope")
