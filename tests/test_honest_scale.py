"""Scale-aware matching: the attacker that knows the local configuration compares in gradient units."""

import torch
from conftest import tiny_lenet

from gradleak.attacks.engine.objectives import l2_distance
from gradleak.attacks.engine.problem import build_problem
from gradleak.client import simulate_client
from gradleak.records import AttackerKnowledge, LocalTraining, Protocol


def _case(lr, epochs=1, batch_size=None):
    model = tiny_lenet()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    y = torch.tensor([1, 4])
    training = LocalTraining(Protocol.FEDAVG, lr=lr, epochs=epochs, batch_size=batch_size)
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
        assert problem.delta_scale == -lr
        losses.append(float(l2_distance(problem.predict(dummy, y), problem.target).detach()))
    assert abs(losses[0] - losses[1]) <= 1e-3 * losses[1]


def test_unrolled_objective_is_in_gradient_units():
    """Four local steps (2 epochs x 2 mini-batches): lr 1e-5 and 1e-4 give deltas 10x apart; the
    unrolling attacker's objective in gradient units stays within 1% (the steps barely move)."""
    dummy = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    losses = []
    for lr in (1e-5, 1e-4):
        model, update, knows, _, _, y = _case(lr, epochs=2, batch_size=1)
        problem = build_problem(model, update, knows)
        assert problem.unrolled and problem.delta_scale == -lr
        losses.append(float(l2_distance(problem.predict(dummy, y), problem.target).detach()))
    assert abs(losses[0] - losses[1]) <= 1e-2 * losses[1]


def test_unrolling_attacker_equals_the_one_step_reader_at_one_step():
    model, update, knows, reads, _, y = _case(0.003)
    wst = build_problem(model, update, knows)
    bst = build_problem(model, update, reads, assumed_lr=0.003)
    dummy = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for a, b in zip(wst.target, bst.target):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    for a, b in zip(wst.predict(dummy, y), bst.predict(dummy, y)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_one_local_step_is_solved_as_the_one_step_problem():
    """At one local step of plain SGD the attacker that knows the configuration solves exactly
    the one-step reader's problem at the true lr: same path, same reconstruction, bit for bit."""
    from gradleak.attacks import ATTACKS

    model, update, knows, reads, _, y = _case(0.003)
    assert not build_problem(model, update, knows).unrolled
    wst = ATTACKS.create("dlg", {"iterations": 5, "assumed_lr": 1.0}).reconstruct(model, update, knows, seed=0)
    bst = ATTACKS.create("dlg", {"iterations": 5, "assumed_lr": 0.003}).reconstruct(model, update, reads, seed=0)
    assert torch.equal(wst.data, bst.data)
