import copy

import pytest
import torch
from conftest import tiny_bn_net, tiny_lenet

from gradleak.client import simulate_client
from gradleak.errors import GradleakError
from gradleak.records import LocalTraining, Protocol


def _batch(n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def test_fedavg_one_full_batch_step_equals_minus_lr_times_fedsgd_gradient():
    model = tiny_lenet()
    x, y = _batch()
    grad = simulate_client(model, x, y)
    lr = 0.05
    delta = simulate_client(model, x, y, LocalTraining(Protocol.FEDAVG, lr=lr, epochs=1))
    assert delta.local_steps == 1
    for g, d in zip(grad.tensors, delta.tensors):
        torch.testing.assert_close(d, -lr * g, rtol=1e-5, atol=1e-7)


def test_fedsgd_matches_plain_autograd():
    model = tiny_lenet()
    x, y = _batch()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    expected = torch.autograd.grad(loss, list(model.parameters()))
    update = simulate_client(model, x, y)
    for e, g in zip(expected, update.tensors):
        torch.testing.assert_close(g, e)


def test_local_steps_and_differ_from_one_step():
    model = tiny_lenet()
    x, y = _batch(8)
    training = LocalTraining(Protocol.FEDAVG, lr=0.1, epochs=2, batch_size=3)
    update = simulate_client(model, x, y, training)
    assert update.local_steps == 2 * 3
    one = simulate_client(model, x, y, LocalTraining(Protocol.FEDAVG, lr=0.1))
    assert not torch.allclose(update.tensors[0], one.tensors[0])


def test_deterministic_under_seed_and_shuffle_depends_on_seed():
    model = tiny_lenet()
    x, y = _batch(8)
    training = LocalTraining(Protocol.FEDAVG, lr=0.1, epochs=2, batch_size=2, shuffle=True)
    a = simulate_client(model, x, y, training, seed=1)
    b = simulate_client(model, x, y, training, seed=1)
    c = simulate_client(model, x, y, training, seed=2)
    assert all(torch.equal(s, t) for s, t in zip(a.tensors, b.tensors))
    assert not all(torch.equal(s, t) for s, t in zip(a.tensors, c.tensors))


def test_caller_model_is_not_mutated_even_with_batchnorm_in_train_mode():
    model = tiny_bn_net()
    model.eval()
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    update = simulate_client(model, x, y, LocalTraining(Protocol.FEDAVG, lr=0.5, epochs=3), model_mode="train")
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert len(update.bn_statistics) == 1
    mean, var = update.bn_statistics[0]
    assert mean.shape == (4,) and var.shape == (4,)


def test_bad_labels_shape_is_rejected():
    model = tiny_lenet()
    x, _ = _batch(4)
    with pytest.raises(GradleakError, match="labels must have shape"):
        simulate_client(model, x, torch.tensor([1, 2]))


@pytest.mark.parametrize("kwargs", [{"lr": 0}, {"lr": float("nan")}, {"epochs": 0}, {"batch_size": 0}])
def test_local_training_validation(kwargs):
    with pytest.raises(GradleakError):
        LocalTraining(Protocol.FEDAVG, **kwargs)
