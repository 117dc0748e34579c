"""BatchNorm-statistics prior, group consistency and Yin's label rule (Yin et al., CVPR 2021)."""

import copy

import pytest
import torch
from conftest import tiny_bn_net, tiny_lenet

from gradleak.attacks import ATTACKS
from gradleak.attacks.engine.bn_statistics import (
    BNTarget,
    batch_statistics,
    bn_distance,
    bn_prior,
    bn_target,
    statistics_from_running,
    statistics_from_update,
)
from gradleak.attacks.engine.labels import recover_labels, yin_labels
from gradleak.client import simulate_client
from gradleak.client.simulate import local_steps
from gradleak.errors import GradleakError
from gradleak.records import (
    Assumption,
    AttackerKnowledge,
    LabelKnowledge,
    LocalTraining,
    Protocol,
)

SHAPE = (1, 8, 8)


def _case(n=4, seed=0):
    model = tiny_bn_net()
    x = torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(n) % 4
    update = simulate_client(model, x, y, model_mode="train")
    return model.train(), x, y, update


def test_prior_gradient_matches_the_formula_on_a_tiny_case():
    """The first BN layer of a net whose first layer is BN sees x itself:
    d/dx [||m - m*|| + ||v - v*||] = (m - m*)/||m - m*|| / N + (v - v*)/||v - v*|| * 2 (x - m) / N."""
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(2 * 16, 3)).train()
    gen = torch.Generator().manual_seed(0)
    mt, vt = torch.rand(2, generator=gen), torch.rand(2, generator=gen) + 0.5
    target = BNTarget("client", ((mt, vt),), Assumption.BN_STATISTICS)
    x = torch.randn(3, 2, 4, 4, generator=gen, requires_grad=True)
    (grad,) = torch.autograd.grad(bn_prior(model, target, 2.0)(x), x)
    n = 3 * 16
    m = x.detach().mean((0, 2, 3))
    v = x.detach().var((0, 2, 3), unbiased=False)
    dm = (m - mt) / (m - mt).norm()
    dv = (v - vt) / (v - vt).norm()
    expected = 2.0 * (dm.reshape(1, 2, 1, 1) / n + dv.reshape(1, 2, 1, 1) * 2 * (x.detach() - m.reshape(1, 2, 1, 1)) / n)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


def test_each_source_gives_the_expected_target():
    model, x, _, update = _case()
    client = bn_target("client", model, update)
    assert client.assumption is Assumption.BN_STATISTICS
    assert float(bn_distance(batch_statistics(model, x), client.statistics)) < 1e-5  # the true batch fits exactly
    running = bn_target("running", model, update)
    assert running.assumption is Assumption.BASIC
    torch.testing.assert_close(running.statistics[0][0], model[1].running_mean)
    proxy = bn_target("proxy", model, update, proxy=x)
    assert proxy.assumption is Assumption.DATA_DISTRIBUTION and model.training
    assert float(bn_distance(proxy.statistics, client.statistics)) < 1e-5
    with pytest.raises(GradleakError, match="bn_proxy"):
        bn_target("proxy", model, update)
    with pytest.raises(GradleakError, match="no BatchNorm|none"):
        bn_target("running", tiny_lenet(), update)


def test_running_statistics_reveal_the_batch_statistics_after_one_step():
    model, x, _, _ = _case()
    bn = model[1]
    before_m, before_v = bn.running_mean.clone(), bn.running_var.clone()
    with torch.no_grad():
        stats = batch_statistics(model, x)  # cloned buffers: untouched
        model(x)  # one train-mode pass updates the running buffers
    mean = statistics_from_running(before_m, bn.running_mean, bn.momentum)
    var = statistics_from_running(before_v, bn.running_var, bn.momentum, count=x.shape[0] * 64, variance=True)
    torch.testing.assert_close(mean, stats[0][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(var, stats[0][1], rtol=1e-4, atol=1e-5)


def _knowledge(y, **kw):
    return AttackerKnowledge(num_samples=len(y), input_shape=SHAPE, num_classes=4, bounds=((0.0,), (1.0,)),
                             label_knowledge=LabelKnowledge.GIVEN, labels=y, **kw)


def test_client_prior_records_level_4_and_helps_on_a_tiny_case():
    model, x, y, update = _case()
    plain = ATTACKS.create("ig", {"iterations": 150, "tv": 0.0}).reconstruct(model, update, _knowledge(y))
    with_bn = ATTACKS.create("ig", {"iterations": 150, "tv": 0.0, "bn": 0.1}).reconstruct(model, update,
                                                                                          _knowledge(y))
    assert Assumption.BN_STATISTICS in with_bn.assumptions and Assumption.BN_STATISTICS not in plain.assumptions
    error = [float(((r.data - x) ** 2).mean()) for r in (plain, with_bn)]
    assert error[1] < error[0]
    running = ATTACKS.create("ig", {"iterations": 2, "bn": 0.1, "bn_source": "running"}).reconstruct(
        model, update, _knowledge(y))
    assert Assumption.BN_STATISTICS not in running.assumptions
    # the knowledge flag is accepted only by an attack that uses the client's statistics
    flagged = _knowledge(y, uses_bn_statistics=True)
    ATTACKS.create("ig", {"iterations": 2, "bn": 0.1}).reconstruct(model, update, flagged)
    with pytest.raises(GradleakError, match="does not use BN statistics"):
        ATTACKS.create("ig", {"iterations": 2}).reconstruct(model, update, flagged)
    with pytest.raises(GradleakError, match="bn_proxy"):
        ATTACKS.create("ig", {"bn": 0.1, "bn_source": "proxy"})


@pytest.mark.parametrize("name", ["ig", "l2"])
def test_group_consistency_at_weight_0_is_plain_restarts(name):
    model, _, y, update = _case()
    opts = {"iterations": 30, "restarts": 3}
    plain = ATTACKS.create(name, opts).reconstruct(model, update, _knowledge(y), seed=3)
    zero = ATTACKS.create(name, {**opts, "group": 0.0}).reconstruct(model, update, _knowledge(y), seed=3)
    assert torch.equal(plain.data, zero.data) and plain.restart_losses == zero.restart_losses
    pulled = ATTACKS.create(name, {**opts, "group": 10.0, "group_start": 0.2}).reconstruct(
        model, update, _knowledge(y), seed=3)
    assert pulled.restart_losses != plain.restart_losses
    with pytest.raises(GradleakError, match="restarts >= 2"):
        ATTACKS.create(name, {"group": 1.0})


def test_yin_label_rule_recovers_distinct_labels_of_a_relu_net():
    for seed in range(20):
        model = tiny_bn_net(classes=10, seed=seed).train()
        gen = torch.Generator().manual_seed(seed)
        y = torch.randperm(10, generator=gen)[:4]
        update = simulate_client(model, torch.rand(4, *SHAPE, generator=gen), y, model_mode="train")
        got = recover_labels(model, update.tensors, 4, SHAPE, rule="yin")
        assert got.tolist() == sorted(y.tolist())
    with pytest.raises(GradleakError, match="distinct"):
        yin_labels(torch.zeros(3, 5), 4)


def test_fedavg_running_buffers_give_the_batch_statistics_after_one_step():
    model = tiny_bn_net()
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(5))
    y = torch.arange(4) % 4
    update = simulate_client(model, x, y, LocalTraining(Protocol.FEDAVG, lr=0.1, epochs=1), model_mode="train")
    assert len(update.bn_running) == 1
    derived = bn_target("client-running", model.train(), update, input_shape=SHAPE)
    assert derived.assumption is Assumption.BN_STATISTICS
    for (m, v), (mt, vt) in zip(derived.statistics, update.bn_statistics):  # the one step's batch is all of x
        torch.testing.assert_close(m, mt, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(v, vt, rtol=1e-4, atol=1e-5)
    assert not simulate_client(model, x, y, model_mode="train").bn_running  # a FedSGD client sends no state
    with pytest.raises(GradleakError, match="bn_running"):
        bn_target("client-running", model, simulate_client(model, x, y, model_mode="train"), input_shape=SHAPE)


def test_fedavg_running_buffers_give_the_momentum_weighted_mean_of_the_steps():
    """2 epochs x 2 mini-batches: the derived first-layer mean is the momentum-weighted mean of
    the four steps' batch means, replayed step by step with the client's weights."""
    model = tiny_bn_net()
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(6))
    y = torch.arange(4) % 4
    training = LocalTraining(Protocol.FEDAVG, lr=0.5, epochs=2, batch_size=2, shuffle=True)
    update = simulate_client(model, x, y, training, model_mode="train", seed=3)
    work = copy.deepcopy(model).train()
    means = []
    work[1].register_forward_hook(lambda _m, inputs, _o: means.append(inputs[0].detach().mean((0, 2, 3))))
    params = {n: p.detach().clone().requires_grad_(True) for n, p in work.named_parameters()}
    local_steps(work, params, {n: b.clone() for n, b in work.named_buffers()}, x, y, training, seed=3)
    m, steps = work[1].momentum, len(means)
    weights = [m * (1 - m) ** (steps - 1 - t) for t in range(steps)]
    expected = sum(w * mean for w, mean in zip(weights, means)) / sum(weights)
    derived = statistics_from_update(model.train(), update, SHAPE)
    assert steps == 4 and not torch.allclose(means[0], means[-1], atol=1e-3)
    torch.testing.assert_close(derived[0][0], expected, rtol=1e-4, atol=1e-5)


def test_client_running_prior_runs_on_a_fedavg_update_and_records_level_4():
    model = tiny_bn_net()
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(7))
    y = torch.arange(4) % 4
    training = LocalTraining(Protocol.FEDAVG, lr=0.1, epochs=1, batch_size=2)
    update = simulate_client(model, x, y, training, model_mode="train")
    knowledge = _knowledge(y, knows_training=True, training=training)
    rec = ATTACKS.create("ig", {"iterations": 3, "bn": 0.1, "bn_source": "client-running"}).reconstruct(
        model, update, knowledge)
    assert Assumption.BN_STATISTICS in rec.assumptions and torch.isfinite(rec.data).all()
