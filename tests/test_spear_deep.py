"""spear-deep: SPEAR on a deeper FC ReLU layer recovers its input features exactly; stage 2 fits images to them."""

import math

import pytest
import torch
from torch import nn

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.errors import GradleakError
from gradleak.records import AttackerKnowledge

SHAPE = (3, 4, 4)
BOX = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _convnet(channels=4, kernel=3, width=64, seed=0):
    torch.manual_seed(seed)
    pad = kernel // 2
    return nn.Sequential(nn.Conv2d(3, channels, kernel, padding=pad), nn.ReLU(), nn.Flatten(),
                         nn.Linear(channels * 16, width), nn.ReLU(), nn.Linear(width, 10)).double()


def _batch(b, seed):
    gen = torch.Generator().manual_seed(200 + seed)
    return torch.rand(b, *SHAPE, generator=gen, dtype=torch.float64), torch.randint(10, (b,), generator=gen)


def _knowledge(b, **kw):
    return AttackerKnowledge(num_samples=b, input_shape=SHAPE, num_classes=10, **kw)


def _features(model, x):
    with torch.no_grad():
        return model[:3](x)


def _psnr(rec, x):
    """Mean PSNR (pixels in [0, 1]) of each original against its nearest reconstruction."""
    out = []
    for s in x:
        mse = min(float(((s - r) ** 2).mean()) for r in rec)
        out.append(10 * math.log10(1 / max(mse, 1e-20)))
    return sum(out) / len(out)


def test_features_of_a_deeper_layer_are_recovered_exactly_and_certified():
    model = _convnet(seed=1)
    x, y = _batch(3, 1)
    rec = ATTACKS.create("spear-deep", {"iterations": 5}).reconstruct(model, simulate_client(model, x, y),
                                                                      _knowledge(3), seed=0)
    true = _features(model, x)
    assert rec.status == "ok" and rec.data.shape == x.shape
    assert rec.notes[0].startswith("spear-deep stage 1 (layer '3'): features exact; 3 of 3 feature rows certified")
    assert all(c.certified and c.residual < 1e-9 for c in rec.certificates)
    # the features themselves: rerun stage 1 and compare to the truth (order free)
    attack = ATTACKS.create("spear-deep", {"iterations": 1})
    sol = attack._solve(model, simulate_client(model, x, y), "3", 3, 0, 0.0)
    err = max(min(float((t - f).norm() / t.norm()) for f in sol.xt) for t in true)
    assert err < 1e-6
    for f, label in zip(sol.xt, rec.labels.tolist()):  # labels travel with their feature rows
        k = min(range(3), key=lambda i: float((true[i] - f).norm()))
        assert label == int(y[k])


def test_stage_two_inverts_a_wide_stride_one_convolution():
    model = _convnet(channels=16, kernel=3, width=128, seed=2)
    x, y = _batch(2, 2)
    update = simulate_client(model, x, y)
    rec = ATTACKS.create("spear-deep", {"iterations": 400, "lr": 0.05}).reconstruct(
        model, update, _knowledge(2, bounds=BOX), seed=0)
    final = float(rec.notes[1].split("feature loss ")[1].split(" ")[0])
    assert final < 1e-3
    assert rec.data.min() >= 0 and rec.data.max() <= 1  # within the box
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert _psnr(noise, x) < 12
    assert _psnr(rec.data, x) > 25


def test_the_layer_can_be_named_and_refusals_name_it():
    model = _convnet(seed=3)
    x, y = _batch(2, 3)
    update = simulate_client(model, x, y)
    rec = ATTACKS.create("spear-deep", {"layer": "3", "iterations": 2}).reconstruct(model, update, _knowledge(2))
    assert "layer '3'" in rec.notes[0]
    with pytest.raises(GradleakError, match=r"layer '0' is Conv2d"):
        ATTACKS.create("spear-deep", {"layer": "0"}).reconstruct(model, update, _knowledge(2))
    with pytest.raises(GradleakError, match=r"layer '5' is followed by nothing"):
        ATTACKS.create("spear-deep", {"layer": "5"}).reconstruct(model, update, _knowledge(2))
    with pytest.raises(GradleakError, match=r"layer must name a module of the model; got 'fc9'"):
        ATTACKS.create("spear-deep", {"layer": "fc9"}).reconstruct(model, update, _knowledge(2))
    torch.manual_seed(0)
    tanh = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(64, 32), nn.Tanh(),
                         nn.Linear(32, 10)).double()
    with pytest.raises(GradleakError, match=r"the model has none \(its linear layers: \['2', '4'\]\)"):
        ATTACKS.create("spear-deep", {}).reconstruct(tanh, simulate_client(tanh, x, y), _knowledge(2))
    no_bias = nn.Sequential(nn.Flatten(), nn.Linear(48, 32, bias=False), nn.ReLU(), nn.Linear(32, 10)).double()
    with pytest.raises(GradleakError, match=r"layer '1' is Linear without bias"):
        ATTACKS.create("spear-deep", {"layer": "1"}).reconstruct(no_bias, simulate_client(no_bias, x, y),
                                                                  _knowledge(2))
