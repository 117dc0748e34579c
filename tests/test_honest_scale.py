"""Scale-aware matching: the attacker that knows the local configuration compares in gradient units."""

import torch
from conftest import tiny_lenet

from gradleak.attacks.engine.objectives import l2_distance
from gradleak.attacks.engine.problem import build_problem
from gradleak.client import simulate_client
from gradleak.records import AttackerKnowledge, LocalTraining, Protocol


def _case(lr):
    model = tiny_lenet()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    y = torch.tensor([1, 4])
    training = LocalTraining(Protocol.FEDAVG, lr=lr, epochs=1)
    update = simulate_client(model, x, y, training)
    knows = AttackerKnowledge(num_samples=2, input_shape=(3, 16, 16), num_classes=10, knows_training=True,
                              training=training)
    reads = AttackerKnowledge(num_samples=2, input_shape=(3, 16, 16), num_classes=10)
    return model, update, knows, reads, x, y


def test_objective_is_invariant_to_multiplying_the_update_by_a_constant():
    """A client step 100x larger (lr 0.3 vs 0.003) multiplies the delta by 100; the objective in
    gradient units of the attacker that knows the rate does not change."""
    dummy = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    losses = []
    for lr in (0.003, 0.3):
        model, update, knows, _, _, y = _case(lr)
        problem = build_problem(model, update, knows)
        assert problem.unrolled and problem.delta_scale == -lr
        losses.append(float(l2_distance(problem.predict(dummy, y), problem.target).detach()))
    assert abs(losses[0] - losses[1]) <= 1e-3 * losses[1]


def test_unrolling_attacker_equals_the_one_step_reader_at_one_step():
    model, update, knows, reads, _, y = _case(0.003)
    wst = build_problem(model, update, knows)
    bst = build_problem(model, update, reads, assumed_lr=0.003)
    dummy = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for a, b in zip(wst.target, bst.target):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    for a, b in zip(wst.predict(dummy, y), bst.predict(dummy, y)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
