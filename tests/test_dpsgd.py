import math

import pytest
import torch
from conftest import tiny_bn_net, tiny_lenet
from opacus.accountants import RDPAccountant
from torch import nn

from gradleak.client.losses import client_loss
from gradleak.client.simulate import simulate_client
from gradleak.defenses.dpsgd import (
    DPSGD,
    PrivacySpent,
    dp_model_problems,
    simulate_dp_client,
)
from gradleak.errors import GradleakError
from gradleak.records import LocalTraining, Protocol

FEDSGD = LocalTraining()
FEDAVG2 = LocalTraining(protocol=Protocol.FEDAVG, lr=0.1, epochs=1, batch_size=2)



def _dp_client(*args, **kwargs):
    """(update, privacy spent) of a DP-SGD client: the update carries what it spent."""
    update = simulate_dp_client(*args, **kwargs)
    return update, update.privacy

def _batch(n: int = 4, size: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def _clipped_mean(model: nn.Module, images, labels, c: float) -> list[torch.Tensor]:
    """Reference: per-sample gradients by a loop, each clipped to norm <= c, averaged."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for i in range(images.shape[0]):
        loss = client_loss("cross-entropy", model(images[i : i + 1]), labels[i : i + 1])
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        scale = min(1.0, c / float(norm))
        total = [t + scale * g for t, g in zip(total, grads)]
    return [t / images.shape[0] for t in total]


def test_disabled_dp_equals_plain_client():
    model, (x, y) = tiny_lenet(size=8), _batch()
    update, spent = _dp_client(model, x, y, FEDSGD, DPSGD(noise_multiplier=0.0, max_grad_norm=1e6))
    plain = simulate_client(model, x, y, FEDSGD)
    assert update.names == plain.names
    for a, b in zip(update.tensors, plain.tensors):
        assert torch.allclose(a, b, atol=1e-6)
    assert update.defenses == ("dpsgd:noise_multiplier=0,max_grad_norm=1e+06",)
    assert update.local_steps == 1 and update.num_samples == 4 and update.model_mode == "eval"
    assert spent.epsilon == math.inf and spent.sample_rate == 1.0


def test_clipping_matches_per_sample_reference():
    model, (x, y) = tiny_lenet(size=8), _batch()
    c = 0.05
    update, _ = _dp_client(model, x, y, FEDSGD, DPSGD(noise_multiplier=0.0, max_grad_norm=c))
    ref = _clipped_mean(model, x, y, c)
    # the per-sample norms exceed c, so clipping is active
    assert simulate_client(model, x, y, FEDSGD).norm() > 2 * c
    for a, b in zip(update.tensors, ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert update.norm() <= c


def test_noise_scale():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 100))  # 4900 coordinates
    x, y = torch.rand(5, 3, 4, 4), torch.randint(0, 100, (5,))
    c, sigma, b = 0.1, 2.0, 5
    clean, _ = _dp_client(model, x, y, FEDSGD, DPSGD(noise_multiplier=0.0, max_grad_norm=c))
    noisy, _ = _dp_client(model, x, y, FEDSGD, DPSGD(noise_multiplier=sigma, max_grad_norm=c), seed=3)
    diff = torch.cat([(n - k).flatten() for n, k in zip(noisy.tensors, clean.tensors)])
    # 4900 draws: the std estimate is good to ~1%, so 5% is tighter than the 10% asked and safe
    assert abs(float(diff.std()) / (sigma * c / b) - 1) < 0.05
    assert abs(float(diff.mean())) < 0.1 * sigma * c / b


def test_seeded_noise():
    model, (x, y) = tiny_lenet(size=8), _batch()
    dp = DPSGD(noise_multiplier=1.0, max_grad_norm=0.1)
    a, _ = _dp_client(model, x, y, FEDSGD, dp, seed=7)
    b, _ = _dp_client(model, x, y, FEDSGD, dp, seed=7)
    c, _ = _dp_client(model, x, y, FEDSGD, dp, seed=8)
    assert all(torch.equal(s, t) for s, t in zip(a.tensors, b.tensors))
    assert not all(torch.equal(s, t) for s, t in zip(a.tensors, c.tensors))


def test_caller_model_unchanged():
    model, (x, y) = tiny_lenet(size=8), _batch()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    simulate_dp_client(model, x, y, FEDAVG2, DPSGD(noise_multiplier=1.0, max_grad_norm=0.1))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())


def test_epsilon_matches_opacus_rdp():
    model, (x, y) = tiny_lenet(size=8), _batch()
    dp = DPSGD(noise_multiplier=1.1, max_grad_norm=1.0, delta=1e-5)
    _, spent = _dp_client(model, x, y, FEDAVG2, dp)
    ref = RDPAccountant()
    for _ in range(2):
        ref.step(noise_multiplier=1.1, sample_rate=0.5)
    assert spent.steps == 2 and spent.sample_rate == 0.5
    assert spent.epsilon == pytest.approx(ref.get_epsilon(1e-5), rel=1e-9)
    longer = LocalTraining(protocol=Protocol.FEDAVG, lr=0.1, epochs=3, batch_size=2)
    _, more = _dp_client(model, x, y, longer, dp)
    assert more.steps == 6 and more.epsilon > spent.epsilon
    _, none = _dp_client(model, x, y, FEDAVG2, DPSGD(noise_multiplier=0.0))
    assert none.epsilon == math.inf and none.to_json()["epsilon"] == "inf"
    assert isinstance(spent, PrivacySpent) and spent.to_json()["steps"] == 2


def test_batchnorm_refused_before_work(monkeypatch):
    def no_work(*_a, **_k):
        raise AssertionError("per-sample machinery started on a refused model")

    import opacus.grad_sample

    monkeypatch.setattr(opacus.grad_sample, "GradSampleModule", no_work)  # dpsgd imports it at call time
    model = tiny_bn_net()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(GradleakError, match="BatchNorm") as err:
        simulate_dp_client(model, x, y, FEDSGD, DPSGD())
    assert "GroupNorm" in str(err.value) and "'1'" in str(err.value)
    assert len(dp_model_problems(model)) == 1 and dp_model_problems(tiny_lenet()) == []


@pytest.mark.parametrize("kwargs, name", [
    ({"noise_multiplier": -1.0}, "noise_multiplier"),
    ({"max_grad_norm": 0.0}, "max_grad_norm"),
    ({"delta": 0.0}, "delta"),
    ({"delta": 1.0}, "delta"),
    ({"accountant": "moments"}, "accountant"),
    ({"sample_rate": 1.5}, "sample_rate"),
])
def test_bad_arguments(kwargs, name):
    with pytest.raises(GradleakError, match=name):
        DPSGD(**kwargs)


def test_bad_call_arguments():
    model, (x, y) = tiny_lenet(size=8), _batch()
    with pytest.raises(GradleakError, match="labels"):
        simulate_dp_client(model, x, y[:2], FEDSGD, DPSGD())
    with pytest.raises(GradleakError, match="mode"):
        simulate_dp_client(model, x, y, FEDSGD, DPSGD(), model_mode="test")


def test_fedavg_two_steps():
    model, (x, y) = tiny_lenet(size=8), _batch()
    update, spent = _dp_client(model, x, y, FEDAVG2, DPSGD(noise_multiplier=0.5, max_grad_norm=0.1))
    assert update.protocol is Protocol.FEDAVG and update.local_steps == 2 and spent.steps == 2
    assert update.names == tuple(n for n, _ in model.named_parameters())
    # each step moves the weights by lr * (clipped mean + noise): the update is not zero
    assert update.norm() > 0
    # without noise each step moves by at most lr * C
    quiet, _ = _dp_client(model, x, y, FEDAVG2, DPSGD(noise_multiplier=0.0, max_grad_norm=0.1))
    assert quiet.norm() <= 2 * 0.1 * 0.1 + 1e-7


def test_all_accountants_give_finite_epsilon():
    model, (x, y) = tiny_lenet(size=8), _batch()
    for name in ("rdp", "prv", "gdp"):
        _, spent = _dp_client(model, x, y, FEDAVG2, DPSGD(accountant=name, sample_rate=0.01))
        assert math.isfinite(spent.epsilon) and spent.epsilon > 0 and spent.accountant == name


def test_disabled_dp_fedavg_equals_plain_client():
    # 5 samples in batches of 2: the last step has 1 sample, so the mean must divide by 1
    model, (x, y) = tiny_lenet(size=8), _batch(n=5)
    training = LocalTraining(protocol=Protocol.FEDAVG, lr=0.5, epochs=2, batch_size=2, shuffle=True)
    update, spent = _dp_client(model, x, y, training, DPSGD(noise_multiplier=0.0, max_grad_norm=1e6), seed=4)
    plain = simulate_client(model, x, y, training, seed=4)
    assert update.local_steps == plain.local_steps == spent.steps == 6
    for a, b in zip(update.tensors, plain.tensors):
        assert torch.allclose(a, b, atol=1e-6)


def test_eval_mode_keeps_dropout_off():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Dropout(0.5), nn.Linear(16, 10))
    x, y = torch.rand(4, 3, 4, 4), torch.randint(0, 10, (4,))
    update, _ = _dp_client(model, x, y, FEDSGD, DPSGD(noise_multiplier=0.0, max_grad_norm=1e6))
    plain = simulate_client(model, x, y, FEDSGD, model_mode="eval")
    for a, b in zip(update.tensors, plain.tensors):
        assert torch.allclose(a, b, atol=1e-6)
