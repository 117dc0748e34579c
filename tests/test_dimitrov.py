"""The FedAvg attack of Dimitrov et al. (TMLR 2022): per-epoch sets, order-invariant prior."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_bn_net

from gradleak.attacks import ATTACKS
from gradleak.attacks.dimitrov import match_epochs, simulate_epochs
from gradleak.client import simulate_client
from gradleak.client.simulate import minibatch_order
from gradleak.errors import GradleakError
from gradleak.records import Assumption, AttackerKnowledge, LocalTraining, Protocol

SHAPE = (1, 8, 8)
TRAINING = LocalTraining(Protocol.FEDAVG, lr=0.05, epochs=2, batch_size=2, shuffle=True)


def _case(seed=5):
    model = tiny_bn_net(classes=4)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, *SHAPE, generator=gen)
    y = torch.tensor([0, 1, 2, 3])
    return model, x, y, simulate_client(model, x, y, TRAINING, seed=seed)


def test_the_client_is_one_ordering_of_the_per_epoch_sets():
    """The shuffled client's delta is the simulation of per-epoch sets holding its images in
    that epoch's order: the attacker's model contains the truth whatever the order."""
    model, x, y, update = _case()
    model.eval()  # the client's mode
    start = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    order = torch.cat(minibatch_order(4, TRAINING, 5)).reshape(2, 4)  # what the client did (seed 5)
    soft = F.one_hot(y, 4).float()
    pred = simulate_epochs(model, start, buffers, x[order], soft[order], TRAINING)
    for p, t in zip(pred, update.tensors):
        torch.testing.assert_close(p.detach(), t / -TRAINING.lr, rtol=1e-4, atol=1e-6)
    # one shared set in a fixed order does not explain it (the order matters)
    fixed = torch.stack([torch.arange(4)] * 2)
    wrong = simulate_epochs(model, start, buffers, x[fixed], soft[fixed], TRAINING)
    assert max(float((p.detach() - t / -TRAINING.lr).abs().max()) for p, t in zip(wrong, update.tensors)) > 1e-4


def test_epoch_matching_recovers_a_permutation():
    x = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    perm = torch.tensor([3, 0, 4, 1, 2])
    orders = match_epochs(torch.stack([x, x[perm]]))
    assert torch.equal(x[perm][orders[1]], x)


def test_attack_needs_the_configuration_and_recovers_the_set():
    model, x, y, update = _case()
    knowledge = AttackerKnowledge(num_samples=4, input_shape=SHAPE, num_classes=4, bounds=((0.0,), (1.0,)))
    with pytest.raises(GradleakError, match="knows_training"):
        ATTACKS.create("dimitrov", {"iterations": 2}).reconstruct(model, update, knowledge)
    knows = AttackerKnowledge(num_samples=4, input_shape=SHAPE, num_classes=4, bounds=((0.0,), (1.0,)),
                              knows_training=True, training=TRAINING)
    rec = ATTACKS.create("dimitrov", {"iterations": 200, "tv": 0.0}).reconstruct(model, update, knows)
    assert Assumption.TRAINING_DETAILS in rec.assumptions and rec.data.shape == (4, *SHAPE)
    assert sorted(rec.labels.tolist()) == [0, 1, 2, 3]
    # each original has a close reconstruction (order is free): mean matched error well below chance
    dist = torch.cdist(x.reshape(4, -1), rec.data.reshape(4, -1)) ** 2 / 64
    from scipy.optimize import linear_sum_assignment
    rows, cols = linear_sum_assignment(dist.numpy())
    matched = float(dist[rows, cols].mean())
    chance = float((torch.cdist(x.reshape(4, -1), torch.rand(4, 64, generator=torch.Generator().manual_seed(9)))
                    ** 2 / 64).mean())
    assert matched < 0.1 * chance, (matched, chance)
    assert rec.labels[torch.as_tensor(cols)].tolist() == y[torch.as_tensor(rows)].tolist()  # each image its label
