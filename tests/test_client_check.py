"""The client's check of a received model: honest tiny models pass, malicious ones are flagged
with the reason that names their construction."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_lenet
from torch import nn

from gradleak.client.check import CheckThresholds, check_model, collinear_group, model_digest
from gradleak.errors import GradleakError
from gradleak.server import parse_server

SHAPE = (3, 8, 8)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 4))


def _data(n=16, seed=0):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("make", [lambda: tiny_lenet(size=8, classes=4), _mlp], ids=["lenet", "mlp"])
def test_honest_tiny_models_pass(make):
    model = make()
    verdict = check_model(model, _data(), expected=make())
    assert not verdict.suspicious and verdict.reasons == ()
    assert {f.check for f in verdict.findings} == {"architecture", "collinear", "disabled", "rare", "quiet", "scale"}


def test_malicious_tiny_models_are_flagged_with_their_reason():
    x = _data()
    imprint = parse_server("imprint:bins=16,estimate=gaussian").build(tiny_lenet(size=8, classes=4), SHAPE).model
    v = check_model(imprint, x, expected=tiny_lenet(size=8, classes=4))
    assert v.suspicious
    assert any(r.startswith("architecture") for r in v.reasons)
    assert any(r.startswith("collinear 'imprint.bins': 16") for r in v.reasons)
    assert not any("imprint.back" in r for r in v.reasons)  # its rows take 1 input: collinear by construction
    v = check_model(imprint, x)  # without the expected architecture the bins still show
    assert any(r.startswith("collinear") for r in v.reasons)
    trap = parse_server("trap:fire=0.02").build(_mlp(), SHAPE, seed=0).model
    v = check_model(trap, x, expected=_mlp())
    # same architecture: only the firing gives it away
    assert [r.split(":")[0] for r in v.reasons] == ["rare '1'", "quiet '1'"]
    tuned = parse_server("trap:fire=0.125").build(_mlp(), SHAPE, seed=0).model  # 1 / batch for a batch of 8
    assert [r.split(":")[0] for r in check_model(tuned, x[:8]).reasons] == ["quiet '1'"]
    loki = parse_server("loki:clients=4,bins=8,client=1,estimate=gaussian").build(_mlp(), SHAPE).model
    v = check_model(loki, x)
    assert {r.split(" ")[0] for r in v.reasons} >= {"collinear", "disabled", "rare", "quiet"}
    fished = _mlp()
    with torch.no_grad():
        fished[3].weight[1:] *= 1e-3  # every class but 0 shrunk
    assert [r.split(" ")[0] for r in check_model(fished, x).reasons] == ["scale"]


def test_digest_and_refusals():
    a, b = _mlp(0), _mlp(0)
    assert model_digest(a) == model_digest(b)
    with torch.no_grad():
        b[1].bias[0] += 1e-6
    assert model_digest(a) != model_digest(b)
    assert collinear_group(torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 0.99) == (2, 1.0)
    with pytest.raises(GradleakError, match="does not take the client's images"):
        check_model(_mlp(), torch.randn(2, 3, 5, 5))
    with pytest.raises(GradleakError, match="rare_fire must be"):
        CheckThresholds(rare_fire=2.0)
