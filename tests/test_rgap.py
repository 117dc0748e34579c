"""R-GAP's closed-form fully connected steps: exact recovery in float64 on FCN3."""

import pytest
import torch
import torch.nn.functional as F

from gradleak.attacks.rgap import (
    invert_network,
    leaky_relu_inverse,
    logit_from_last_layer,
)
from gradleak.errors import GradleakError
from gradleak.models import build_model


def _fcn3_case(seed=0):
    model = build_model("fcn3", num_classes=1, input_shape=(1, 28, 28), seed=seed).double()
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = float(model(x).detach())
    label = -1 if u > 0 else 1  # misclassified on purpose, as in the paper's demo
    loss = F.softplus(-label * model(x)).sum()  # logistic loss log(1 + e^{-y u})
    grads = torch.autograd.grad(loss, list(model.parameters()))
    weights = [p.detach() for p in model.parameters()]
    return model, x, u, label, weights, list(grads)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fcn3_single_image_is_recovered_exactly_in_float64(seed):
    model, x, _, label, _, grads = _fcn3_case(seed)
    rec = invert_network(model, grads, label, (1, 28, 28))
    err = float((rec.reshape(-1) - x.reshape(-1)).norm() / x.norm())
    assert err < 1e-8


def test_last_layer_step_returns_the_logit_and_its_loss_derivative():
    _, _, u, label, weights, grads = _fcn3_case(0)
    logit, k = logit_from_last_layer(grads[-1], weights[-1], label)
    assert logit == pytest.approx(u, rel=1e-9)
    assert k == pytest.approx(-label / (1 + torch.exp(torch.tensor(label * u, dtype=torch.float64)).item()), rel=1e-9)


def test_a_correctly_classified_sample_is_refused():
    _, _, u, label, weights, grads = _fcn3_case(0)
    with pytest.raises(GradleakError, match="classified correctly"):
        logit_from_last_layer(-grads[-1], weights[-1], label)  # the sign of the gradient flips the case
    with pytest.raises(GradleakError, match="label must be -1 or \\+1"):
        logit_from_last_layer(grads[-1], weights[-1], 0)


def test_leaky_relu_inverse_round_trips():
    z = torch.randn(100, dtype=torch.float64)
    back, deriv = leaky_relu_inverse(F.leaky_relu(z, 0.2), 0.2)
    torch.testing.assert_close(back, z)
    torch.testing.assert_close(deriv, torch.where(z >= 0, 1.0, 0.2).double())


def test_fcn3_in_float32_beats_40_db():
    model = build_model("fcn3", num_classes=1, input_shape=(1, 28, 28), seed=3)
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    label = -1 if float(model(x).detach()) > 0 else 1
    grads = torch.autograd.grad(F.softplus(-label * model(x)).sum(), list(model.parameters()))
    rec = invert_network(model, list(grads), label, (1, 28, 28)).float().reshape(-1)
    mse = float(((rec.clamp(0, 1) - x.reshape(-1)) ** 2).mean())
    assert -10 * torch.log10(torch.tensor(max(mse, 1e-12))) > 40


@pytest.mark.parametrize("name,shape", [("cnn6", (3, 32, 32)), ("fcn3", (1, 28, 28))])
def test_network_inversion_recovers_the_image_in_float64(name, shape):
    from gradleak.attacks.rgap import invert_network

    model = build_model(name, num_classes=1, input_shape=shape, seed=0).double()
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    label = -1 if float(model(x).detach()) > 0 else 1
    grads = torch.autograd.grad(F.softplus(-label * model(x)).sum(), list(model.parameters()))
    rec = invert_network(model, list(grads), label, shape)
    assert float((rec - x[0]).norm() / x.norm()) < 1e-6  # measured 3e-9 (CNN6), 2e-15 (FCN3)


def test_cnn6_in_float32_beats_40_db_and_cnn6_d_does_not():
    from gradleak.attacks.rgap import invert_network

    psnr = {}
    for name in ("cnn6", "cnn6-d"):
        model = build_model(name, num_classes=1, input_shape=(3, 32, 32), seed=0)
        x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        label = -1 if float(model(x).detach()) > 0 else 1
        grads = torch.autograd.grad(F.softplus(-label * model(x)).sum(), list(model.parameters()))
        rec = invert_network(model, list(grads), label, (3, 32, 32))
        mse = float(((rec.clamp(0, 1) - x[0]) ** 2).mean())
        psnr[name] = -10 * torch.log10(torch.tensor(max(mse, 1e-12))).item()
    assert psnr["cnn6"] > 40  # measured 114 dB
    assert psnr["cnn6-d"] < 20  # the paper's rank-deficient variant: measured 8 dB


def test_networks_rgap_cannot_invert_are_refused_by_layer():
    from torch import nn

    from gradleak.attacks.rgap import invert_network

    relu = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 1, bias=False))
    with pytest.raises(GradleakError, match=r"cannot invert this model: layer .1. \(ReLU\): ReLU zeroes"):
        invert_network(relu, [torch.zeros(1)] * 2, 1, (3, 32, 32))
    biased = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))
    with pytest.raises(GradleakError, match=r"layer .1. \(Linear\) has a bias"):
        invert_network(biased, [torch.zeros(1)] * 2, 1, (3, 2, 2))
