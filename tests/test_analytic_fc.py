"""analytic-fc: exact recovery from a fully connected first layer, refusals, batch grouping."""

import pytest
import torch
from torch import nn

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.errors import GradleakError
from gradleak.records import AttackerKnowledge, LocalTraining, Protocol


def _mlp(width=256, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, width), nn.ReLU(), nn.Linear(width, 10))


def _knowledge(n):
    return AttackerKnowledge(num_samples=n, input_shape=(3, 8, 8), num_classes=10)


def test_one_sample_is_recovered_exactly_with_its_label():
    model = _mlp()
    x = torch.rand(1, 3, 8, 8)
    update = simulate_client(model, x, torch.tensor([7]))
    rec = ATTACKS.get("analytic-fc")().reconstruct(model, update, _knowledge(1))
    torch.testing.assert_close(rec.data, x, rtol=1e-4, atol=1e-5)
    assert rec.labels.tolist() == [7] and rec.status == "ok" and rec.iterations == 0
    assert len(rec.units[0]) > 50  # every unit the sample reached gives it


def test_a_batch_is_split_by_units_each_sample_reaches_alone():
    model = _mlp(width=1024)
    x = torch.rand(4, 3, 8, 8) - 0.5
    update = simulate_client(model, x, torch.tensor([0, 1, 2, 3]))
    rec = ATTACKS.get("analytic-fc")().reconstruct(model, update, _knowledge(4))
    assert rec.status == "ok"
    for sample in x:  # each original appears exactly among the reconstructions
        err = min(float((sample - r).abs().max()) for r in rec.data)
        assert err < 1e-4
    units = [set(u) for u in rec.units]
    assert all(units) and all(not (a & b) for i, a in enumerate(units) for b in units[i + 1:])


def test_fedavg_one_step_delta_gives_the_same_sample():
    model = _mlp()
    x = torch.rand(1, 3, 8, 8)
    update = simulate_client(model, x, torch.tensor([2]), LocalTraining(Protocol.FEDAVG, lr=0.05, epochs=1))
    rec = ATTACKS.get("analytic-fc")().reconstruct(model, update, _knowledge(1))
    torch.testing.assert_close(rec.data, x, rtol=1e-3, atol=1e-4)


def test_refuses_a_model_whose_first_layer_is_not_linear_with_bias():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    update = simulate_client(conv, torch.rand(1, 3, 8, 8), torch.tensor([1]))
    with pytest.raises(GradleakError, match=r"layer '0' is Conv2d"):
        ATTACKS.get("analytic-fc")().reconstruct(conv, update, _knowledge(1))
    nobias = nn.Sequential(nn.Flatten(), nn.Linear(192, 10, bias=False))
    update = simulate_client(nobias, torch.rand(1, 3, 8, 8), torch.tensor([1]))
    with pytest.raises(GradleakError, match=r"layer '1' is Linear without bias"):
        ATTACKS.get("analytic-fc")().reconstruct(nobias, update, _knowledge(1))


def test_model_is_left_untouched():
    model = _mlp().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    update = simulate_client(model, torch.rand(1, 3, 8, 8), torch.tensor([1]))
    ATTACKS.get("analytic-fc")().reconstruct(model, update, _knowledge(1))
    assert model.training and not model._forward_pre_hooks
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
