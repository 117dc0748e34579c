"""The Bayes attack and its baselines: the conditionals reduce to the distances they
generalize, skipped layers leave the objective, and the knowledge is checked."""

import logging

import pytest
import torch
from conftest import tiny_lenet

from gradleak.attacks import ATTACKS
from gradleak.attacks.engine.problem import Layout, build_problem, matching_objective
from gradleak.client import simulate_client
from gradleak.defenses import build_defense
from gradleak.errors import GradleakError
from gradleak.records import AttackerKnowledge, LabelKnowledge, LocalTraining

SHAPE = (3, 16, 16)


def _case(seed=0, training=LocalTraining()):
    model = tiny_lenet(size=16, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, *SHAPE, generator=gen)
    y = torch.tensor([3])
    return model, x, y, simulate_client(model, x, y, training)


def _knowledge(y, defense=None, **extra):
    return AttackerKnowledge(num_samples=1, input_shape=SHAPE, num_classes=10, label_knowledge=LabelKnowledge.GIVEN,
                             labels=y, bounds=((0.0,) * 3, (1.0,) * 3), defense=defense, **extra)


def _run(name, model, update, knowledge, **options):
    return ATTACKS.get(name)(iterations=40, **options).reconstruct(model, update, knowledge, seed=1)


def _objective_gaps(model, update, knowledge, distance, x):
    """Objective differences between three nearby inputs (constants cancel)."""
    layout = Layout(1, SHAPE)
    rows = torch.cat([layout.pack(x[None] + 0.2 * k) for k in range(3)])
    problem = build_problem(model, update, knowledge)
    objective, _ = matching_objective(problem, layout, distance, knowledge.labels, batched=False)
    values = objective(rows).double()
    return values[1:] - values[0]


def _conditional(attack, update, knowledge):
    return ATTACKS.get(attack)()._distance(update, knowledge)


@pytest.mark.parametrize("specs, baseline, factor", [
    ([], "l2", 0.5),  # Identity is N(0, 1): nll = l2 / 2 + const
    (["gaussian:sigma=0.5"], "l2", 1 / (2 * 0.25)),  # nll = l2 / (2 sigma^2) + const
    (["laplacian:b=0.2"], "l1", 1 / 0.2),  # nll = l1 / b + const
])
def test_bayes_conditionals_are_the_distances_they_generalize(specs, baseline, factor):
    model, x, y, update = _case()
    defense = build_defense(specs)
    shared = defense.transform(update, seed=3)
    knowledge = _knowledge(y, defense)
    bayes = _objective_gaps(model, shared, knowledge, _conditional("bayes", shared, knowledge), x)
    base = _objective_gaps(model, shared, knowledge, baseline, x)
    assert torch.allclose(bayes, factor * base, rtol=1e-4)
    other = "l1" if baseline == "l2" else "l2"
    assert not torch.allclose(bayes, factor * _objective_gaps(model, shared, knowledge, other, x), rtol=1e-2)


def test_bayes_runs_the_known_defense_s_conditional():
    from gradleak.defenses.conditionals import Identity, Laplace

    model, _, y, update = _case()
    defense = build_defense(["laplacian:b=0.2"])
    assert _conditional("bayes", update, _knowledge(y, defense)) == Laplace(0.2)
    assert _conditional("bayes", update, _knowledge(y)) == Identity()


def test_the_attacks_reduce_the_true_objective():
    model, x, y, update = _case()
    for name in ("bayes", "l2", "l1", "cosine"):
        rec = _run(name, model, update, _knowledge(y))
        assert rec.loss_history[-1] < rec.loss_history[0], name
        assert rec.status == "ok" and rec.data.shape == x.shape


def test_skipped_layers_leave_the_objective():
    model, x, y, update = _case()
    knowledge = _knowledge(y)
    last = update.names[-2]  # the classifier's weight
    tampered = update.tensors[:-2] + (update.tensors[-2] * 5 + 1,) + update.tensors[-1:]
    import dataclasses

    other = dataclasses.replace(update, tensors=tampered)
    layout = Layout(1, SHAPE)
    rows = layout.pack(x[None] + 0.1)
    for distance in ("l2", "cosine", "l1"):
        values = []
        for u in (update, other):
            problem = build_problem(model, u, knowledge, skip=(last,))
            objective, _ = matching_objective(problem, layout, distance, y, batched=False)
            values.append(float(objective(rows).detach()))
        assert values[0] == pytest.approx(values[1], rel=1e-6), distance
        full, _ = matching_objective(build_problem(model, other, knowledge), layout, distance, y, batched=False)
        assert float(full(rows)) != pytest.approx(values[1], rel=1e-3)


def test_skip_batched_and_one_by_one_agree():
    model, x, y, update = _case()
    knowledge = _knowledge(y)
    layout = Layout(1, SHAPE)
    rows = torch.cat([layout.pack(x[None] + 0.1 * k) for k in range(3)])
    problem = build_problem(model, update, knowledge, skip=(update.names[0],))
    for distance in ("cosine", "l2"):
        batched, used = matching_objective(problem, layout, distance, y, batched=True)
        single, _ = matching_objective(problem, layout, distance, y, batched=False)
        assert used
        assert torch.allclose(batched(rows), single(rows), rtol=1e-4, atol=1e-6)


def test_skip_names_are_checked():
    model, _, y, update = _case()
    with pytest.raises(GradleakError, match="does not have.*'nope'"):
        _run("ig", model, update, _knowledge(y), skip=("nope",))
    with pytest.raises(GradleakError, match="no parameter"):
        _run("cosine", model, update, _knowledge(y), skip=update.names)
    with pytest.raises(GradleakError, match="sequence of parameter names"):
        ATTACKS.get("bayes")(skip="0.weight")


def test_bayes_models_a_fedavg_delta_read_as_one_step():
    training = LocalTraining(protocol="fedavg", lr=0.05)
    model, _, y, update = _case(training=training)
    defense = build_defense(["laplacian:b=0.01"])
    shared = defense.transform(update, seed=0)
    rec = _run("bayes", model, shared, _knowledge(y, defense), assumed_lr=0.05)
    assert rec.loss_history[-1] < rec.loss_history[0]


def test_knowledge_checks_the_defense():
    with pytest.raises(GradleakError, match="Defense"):
        _knowledge(torch.tensor([1]), defense="gaussian:sigma=0.1")
    with pytest.raises(GradleakError, match="defense_seed"):
        _knowledge(torch.tensor([1]), defense_seed=3)
    with pytest.raises(GradleakError, match="defense_seed must be None or an integer >= 0, got -1"):
        _knowledge(torch.tensor([1]), defense=build_defense(["prune:rate=0.5"]), defense_seed=-1)


def test_bayes_warns_when_the_update_was_defended_but_the_attacker_does_not_know(caplog):
    model, _, y, update = _case()
    shared = build_defense(["gaussian:sigma=0.01"]).transform(update, seed=0)
    with caplog.at_level(logging.WARNING, logger="gradleak.attacks.bayes"):
        _run("bayes", model, shared, _knowledge(y))
    assert "gaussian:sigma=0.01" in caplog.text


def test_bad_options_are_rejected():
    with pytest.raises(GradleakError, match="lr_end"):
        ATTACKS.get("bayes")(lr_end=2.0)
    with pytest.raises(GradleakError, match="tv"):
        ATTACKS.get("l2")(tv=-1.0)
