"""Exact-leakage certificates: SPEAR's conditions agree with the attack, the report and the CLI."""

import json

import pytest
import torch
from torch import nn

from gradleak.analysis import exact_leakage
from gradleak.analysis.exact import spear_conditions
from gradleak.attacks import ATTACKS
from gradleak.attacks.spear import success_probability
from gradleak.client import simulate_client
from gradleak.errors import GradleakError
from gradleak.records import AttackerKnowledge


def _case(seed):
    """A random tiny float64 MLP and batch: narrow layers make some batches unrecoverable."""
    gen = torch.Generator().manual_seed(seed)
    width = int(torch.randint(16, 64, (1,), generator=gen))
    b = int(torch.randint(2, 7, (1,), generator=gen))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, width), nn.ReLU(), nn.Linear(width, 5)).double()
    shift = float(torch.rand((), generator=gen)) * 1.5  # positive shifts switch more units on: fewer zeros
    x = torch.randn(b, 3, 2, 2, generator=gen, dtype=torch.float64) + shift
    y = torch.randint(5, (b,), generator=gen)
    return model, x, y


def test_the_certificate_agrees_with_the_attack_on_random_tiny_cases():
    budget = 20_000
    outcomes = []
    for seed in range(30):
        model, x, y = _case(seed)
        b = x.shape[0]
        ok, reason, zeros, active, fractions = spear_conditions(model, model[1], x.reshape(b, -1), y,
                                                                "cross-entropy")
        chance = success_probability(zeros, active, b, budget, fractions) if ok else 0.0
        if 0.01 < chance < 0.99:
            continue  # the budget decides by luck: no verdict to compare
        try:
            rec = ATTACKS.create("spear", {"budget": budget}).reconstruct(
                model, simulate_client(model, x, y), AttackerKnowledge(num_samples=b, input_shape=(3, 2, 2),
                                                                      num_classes=5))
            err = max(min(float((s - r).norm() / s.norm()) for r in rec.data) for s in x)
            success = rec.status == "ok" and err < 1e-6
            assert success == all(c.certified for c in rec.certificates)  # the attack's own certificate agrees
        except GradleakError:  # rank below the batch: refused
            success = False
        assert (chance >= 0.99) == success, (seed, reason, chance)
        outcomes.append(success)
    assert len(outcomes) >= 20 and 5 <= sum(outcomes) <= len(outcomes) - 5  # both verdicts, tested both ways


def test_report_rows_limit_and_json():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 200), nn.ReLU(), nn.Linear(200, 10))
    report = exact_leakage(model, (3, 4, 4), max_batch=8, budget=100_000)
    assert [r.batch for r in report.rows] == list(range(1, 9))
    assert report.rows[0].spear_exact and report.rows[0].expected_proposals == 0
    costs = [r.expected_proposals for r in report.rows if r.spear_exact]
    assert costs == sorted(costs)  # the cost grows with the batch
    assert report.spear_limit >= 4
    assert report.rgap_ends and "bias" in report.rgap_ends  # R-GAP's analysis names the layer that ends it
    data = report.to_json()
    assert data["spear_limit"] == report.spear_limit and len(data["rows"]) == 8
    json.dumps(data)


def test_a_tiny_budget_is_not_exact_and_says_why():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 200), nn.ReLU(), nn.Linear(200, 10))
    report = exact_leakage(model, (3, 4, 4), max_batch=6, budget=2)
    assert not report.rows[5].spear_exact and "budget of 2 proposals" in report.rows[5].spear_reason


def test_models_spear_does_not_cover_name_the_layer():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(16, 1, bias=False))
    report = exact_leakage(conv, (3, 4, 4), max_batch=2)
    assert report.spear_ends and "layer '0' is Conv2d" in report.spear_ends
    assert all(r.spear_exact is None for r in report.rows)
    assert report.rows[0].rgap_exact is not None and report.rows[1].rgap_exact is False


def test_bad_arguments_are_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 20), nn.ReLU(), nn.Linear(20, 10))
    with pytest.raises(GradleakError, match="max_batch must be a positive integer, got 0"):
        exact_leakage(model, (3, 4, 4), max_batch=0)
    with pytest.raises(GradleakError, match=r"inputs must have shape \(N, 3, 4, 4\)"):
        exact_leakage(model, (3, 4, 4), inputs=torch.zeros(5, 48))


def test_cli_rank_exact_json(capsys):
    from gradleak.cli import main

    assert main(["rank", "-m", "mlp", "--classes", "4", "--input-shape", "3,4,4", "--model-opt", "hidden=[64]",
                 "--exact", "--max-batch", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in data["rows"]] == [1, 2, 3] and data["spear_layer"] == "1"
