"""IGSA (our definition of the SoK's Input-Gradient Smoothness Analysis): the exact JVP
against finite differences, a hand-derived rho, weights, determinism, no side effects,
the radius trend, input errors and the CLI."""

import argparse
import json
import math

import pytest
import torch
from conftest import tiny_bn_net, tiny_lenet
from torch import nn

from gradleak.analysis.igsa import (
    IGSAResult,
    ball_samples,
    igsa,
    layer_jvp_norms,
    relative_change,
    trainable_layers,
)
from gradleak.cli.igsa import add_parser
from gradleak.errors import GradleakError

# torch's forward-mode decompositions call the deprecated torch.jit.script when first loaded
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _inputs(n=2, classes=4, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 1, 8, 8, generator=gen, dtype=dtype),
            torch.randint(0, classes, (n,), generator=gen))


def _autograd_layer_grads(model, x, y):
    """Per-layer gradient vectors of the single-sample loss with plain autograd (the reference)."""
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x[None]), torch.tensor([y])).backward()
    return [torch.cat([model.get_parameter(n).grad.reshape(-1) for n in names])
            for _, names in trainable_layers(model)]


def test_jvp_matches_central_finite_differences_in_float64():
    model = tiny_lenet(channels=1, size=8, classes=4).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 8, 8, generator=gen, dtype=torch.float64)
    v = torch.randn(1, 8, 8, generator=gen, dtype=torch.float64)
    v /= v.norm()
    g_norm, jv_norm = layer_jvp_norms(model, x, 2, v)
    h = 1e-5
    plus, minus = _autograd_layer_grads(model, x + h * v, 2), _autograd_layer_grads(model, x - h * v, 2)
    fd = torch.stack([((a - b) / (2 * h)).norm() for a, b in zip(plus, minus)])
    ref = torch.stack([g.norm() for g in _autograd_layer_grads(model, x, 2)])
    assert len(jv_norm) == 3 and bool((jv_norm > 0).all())
    torch.testing.assert_close(jv_norm, fd, rtol=1e-7, atol=0)
    torch.testing.assert_close(g_norm, ref, rtol=1e-12, atol=0)


def test_rho_of_a_zero_weight_linear_layer_checks_by_hand():
    # logits W x + b with W = 0: the softmax is constant, so with c = softmax(b) - e_y the
    # gradient is (c x^T, c): ||g|| = ||c|| sqrt(||x||^2 + 1) and J v = (c v^T, 0), ||J v|| = ||c||
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.3, -0.2, 0.5, 0.0]))
    x = torch.full((1, 8, 8), 0.5, dtype=torch.float64)  # ||x|| = 4
    v = torch.zeros(1, 8, 8, dtype=torch.float64)
    v[0, 3, 5] = 1.0
    c = torch.softmax(model[1].bias.detach(), 0) - torch.eye(4, dtype=torch.float64)[1]
    g_norm, jv_norm = layer_jvp_norms(model, x, 1, v)
    torch.testing.assert_close(g_norm, (c.norm() * math.sqrt(17)).reshape(1))
    torch.testing.assert_close(jv_norm, c.norm().reshape(1))

    # so rho = R / sqrt(||x'||^2 + 1) with ||x|| - R <= ||x'|| <= ||x|| + R, R = radius * 8
    radius = 0.05
    r = radius * 8
    result = igsa(model, x[None], torch.tensor([1]), radius=radius, samples=16)
    low, high = 1 / (1 + r / math.sqrt((4 - r) ** 2 + 1)), 1 / (1 + r / math.sqrt((4 + r) ** 2 + 1))
    assert low <= result.score <= high
    assert low <= result.layer_scores[0] <= high and result.weights == (1.0,)
    assert r / math.sqrt((4 + r) ** 2 + 1) <= result.layer_rho_median[0] <= r / math.sqrt((4 - r) ** 2 + 1)


def test_layers_follow_parameter_order_and_skip_frozen_modules():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
    x, y = _inputs()
    result = igsa(model, x, y, samples=2)
    assert result.layers == ("1", "3", "5")
    model[1].requires_grad_(False)
    assert igsa(model, x, y, samples=2).layers == ("3", "5")


def test_linear_weights_decrease_and_sum_to_one_and_uniform_is_flat():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4))
    x, y = _inputs()
    result = igsa(model, x, y, samples=2)
    assert result.weights == pytest.approx((3 / 6, 2 / 6, 1 / 6))
    assert math.fsum(result.weights) == pytest.approx(1.0)
    assert result.score == pytest.approx(sum(w * s for w, s in zip(result.weights, result.layer_scores)))
    assert all(0 < s <= 1 for s in result.layer_scores) and 0 < result.score <= 1
    flat = igsa(model, x, y, samples=2, weights="uniform")
    assert flat.weights == pytest.approx((1 / 3,) * 3)
    assert flat.layer_scores == result.layer_scores  # the weights change only the total
    assert flat.score == pytest.approx(sum(result.layer_scores) / 3)


def test_points_are_uniform_in_the_ball_and_probes_are_unit_directions():
    x = torch.tensor([[3.0, -1.0]])  # d = 2: P(||e|| < R / sqrt(2)) = 1/2, P(||e|| < R / 2) = 1/4
    points, probes = ball_samples(x, 2.0, 4000, torch.Generator().manual_seed(0))
    assert points.shape == probes.shape == (4000, 1, 2) and points.dtype == torch.float64
    dist = (points - x.double()).flatten(1).norm(dim=1)
    assert float(dist.max()) <= 2.0 and float(dist.max()) > 1.99
    assert abs(float((dist < 2.0 / math.sqrt(2)).double().mean()) - 0.5) < 0.03
    assert abs(float((dist < 1.0).double().mean()) - 0.25) < 0.03
    torch.testing.assert_close(probes.flatten(1).norm(dim=1), torch.ones(4000, dtype=torch.float64))
    angle = torch.atan2(probes[:, 0, 1], probes[:, 0, 0])  # directions: uniform angle
    assert abs(float((angle > 0).double().mean()) - 0.5) < 0.03
    high = ball_samples(torch.zeros(1, 8, 8), 1.0, 400, torch.Generator().manual_seed(0))[0].flatten(1).norm(dim=1)
    assert float(high.max()) <= 1.0 and abs(float(high.median()) - 0.5 ** (1 / 64)) < 0.003  # median of U^(1/d)


def test_zero_gradient_gives_zero_or_infinite_rho():
    assert relative_change(2.0, 0.0, 0.0) == 0.0
    assert relative_change(2.0, 0.0, 1e-30) == math.inf
    assert relative_change(2.0, 4.0, 1.0) == 0.5
    result = IGSAResult(0.5, ("a",), (1.0,), (0.5,), (math.inf,), 0.05, 1, 1, 0.0)
    assert json.loads(json.dumps(result.to_json()))["layer_rho_median"] == [None]


def test_same_seed_same_result_other_seed_differs_and_global_rng_untouched():
    model = tiny_lenet(channels=1, size=8, classes=4)
    x, y = _inputs()
    state = torch.get_rng_state()
    a = igsa(model, x, y, samples=3, seed=5)
    b = igsa(model, x, y, samples=3, seed=5)
    c = igsa(model, x, y, samples=3, seed=6)
    assert torch.equal(state, torch.get_rng_state())
    assert (a.score, a.layer_scores, a.layer_rho_median) == (b.score, b.layer_scores, b.layer_rho_median)
    assert a.score != c.score and a.layer_rho_median != c.layer_rho_median


def test_the_callers_model_is_unchanged():
    model = tiny_bn_net()
    model.train()
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    x, y = _inputs()
    igsa(model, x, y, samples=2)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert flags == [m.training for m in model.modules()]
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True, True, True]
    assert all(p.grad is None for p in model.parameters())


def test_a_larger_radius_lowers_the_score():
    model = tiny_lenet(channels=1, size=8, classes=4)
    x, y = _inputs(3)
    scores = [igsa(model, x, y, radius=r, samples=4).score for r in (0.01, 0.05, 0.2, 1.0)]
    assert scores == sorted(scores, reverse=True) and scores[0] - scores[-1] > 0.1


def _frozen_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).requires_grad_(False)


@pytest.mark.parametrize("change,argument", [
    ({"images": torch.zeros(8)}, "images"),
    ({"images": torch.zeros(2, 1, 8, 8, dtype=torch.long)}, "images"),
    ({"images": torch.full((2, 1, 8, 8), float("nan"))}, "images"),
    ({"labels": torch.tensor([0, 1, 2])}, "labels"),
    ({"labels": torch.tensor([0.0, 1.0])}, "labels"),
    ({"labels": torch.tensor([0, 4])}, "labels"),
    ({"labels": torch.tensor([-1, 0])}, "labels"),
    ({"radius": 0.0}, "radius"),
    ({"radius": float("inf")}, "radius"),
    ({"radius": "0.1"}, "radius"),
    ({"samples": 0}, "samples"),
    ({"samples": 1.5}, "samples"),
    ({"samples": True}, "samples"),
    ({"weights": "quadratic"}, "weights"),
    ({"loss": "hinge"}, "loss"),
    ({"seed": 0.5}, "seed"),
    ({"model": object()}, "model"),
    ({"model": _frozen_model()}, "model"),
])
def test_bad_inputs_raise_naming_the_argument(change, argument):
    x, y = _inputs()
    kwargs = {"model": tiny_lenet(channels=1, size=8, classes=4), "images": x, "labels": y} | change
    with pytest.raises(GradleakError, match=argument) as err:
        igsa(kwargs.pop("model"), kwargs.pop("images"), kwargs.pop("labels"), **kwargs)
    if argument == "weights":
        assert "linear" in str(err.value) and "uniform" in str(err.value)


def _cli(argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prints_json_with_a_score_on_digits(capsys):
    assert _cli(["igsa", "-m", "mlp", "-d", "digits", "-n", "2", "--samples", "2", "--json",
                 "--model-opt", "hidden=[16]"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 < report["score"] <= 1
    assert report["images"] == 2 and report["samples"] == 2 and report["indices"] == [0, 1]
    assert report["layers"] == ["1", "3"] and report["model_options"] == {"hidden": [16]}


def test_cli_table_and_user_mistakes(capsys):
    assert _cli(["igsa", "-m", "lenet", "-d", "digits", "-i", "3", "5", "--samples", "1", "--weights", "uniform"]) == 0
    out = capsys.readouterr().out
    assert "IGSA" in out and "median rho" in out
    with pytest.raises(GradleakError, match="--images"):
        _cli(["igsa", "-m", "lenet", "-d", "digits", "-n", "0"])
    with pytest.raises(GradleakError, match="either"):
        _cli(["igsa", "-m", "lenet", "-d", "digits", "-n", "2", "-i", "1"])
    with pytest.raises(GradleakError, match="seed"):
        _cli(["igsa", "-m", "lenet", "-d", "digits", "--model-opt", "seed=1"])
    with pytest.raises(GradleakError, match="width"):
        _cli(["igsa", "-m", "lenet", "-d", "digits", "-n", "1", "--model-opt", "width=3"])
