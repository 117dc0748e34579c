"""Federated training for the utility side of a defense: deterministic, applies the
defense, leaves the caller's model alone, and reports through the CLI."""

import json

import pytest
import torch
from conftest import tiny_lenet

from gradleak.cli import main
from gradleak.client import simulate_client
from gradleak.data import split_iid
from gradleak.defenses import build_defense
from gradleak.errors import GradleakError
from gradleak.metrics import test_accuracy as accuracy
from gradleak.pipelines import federated
from gradleak.pipelines.federated import (
    FederatedTraining,
    federated_average,
    train_federated,
)
from gradleak.records import LocalTraining


def _data(seed=0, n=60):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 16, generator=gen)
    y = (x[:, 0].mean((1, 2)) > 0.5).long() + 2 * (x[:, 1].mean((1, 2)) > 0.5).long()  # learnable labels
    return x, y


def _linear():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))


CONFIG = FederatedTraining(clients=3, rounds=3, training=LocalTraining(protocol="fedavg", lr=0.5, batch_size=10))


def test_split_is_a_seeded_partition():
    shares = split_iid(10, 3, seed=1)
    assert sorted(torch.cat(shares).tolist()) == list(range(10)) and [len(s) for s in shares] == [4, 3, 3]
    assert all(torch.equal(a, b) for a, b in zip(shares, split_iid(10, 3, seed=1)))
    with pytest.raises(GradleakError, match="clients"):
        split_iid(2, 3, seed=0)


def test_identity_defense_trains_exactly_like_no_defense_and_the_model_is_untouched():
    model = _linear()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, test = _data(0), _data(1)
    plain = train_federated(model, train, test, CONFIG)
    same = train_federated(model, train, test, CONFIG, defense=build_defense(["gaussian:sigma=0"]))
    assert plain.history == same.history and len(plain.history) == 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert plain.accuracy > accuracy(model, *test)  # it learns something


def test_the_defense_is_applied_and_changes_training():
    model = _linear()
    train, test = _data(0), _data(1)
    plain = train_federated(model, train, test, CONFIG)
    noisy = train_federated(model, train, test, CONFIG, defense=build_defense(["gaussian:sigma=1"]))
    assert noisy.defenses == ("gaussian:sigma=1",)
    assert noisy.history != plain.history


def test_dp_clients_report_their_epsilon():
    model = tiny_lenet(size=16, classes=4)
    result = train_federated(model, _data(0), _data(1), CONFIG, defense=build_defense(["dpsgd:noise_multiplier=1"]))
    assert result.epsilon_per_round is not None and 0 < result.epsilon_per_round < float("inf")


def test_utility_command_reports_both_runs(tmp_path, capsys):
    out = tmp_path / "utility.json"
    args = ["utility", "--rounds", "2", "--clients", "3", "--image-size", "8", "--defense", "topk:keep=0.1"]
    assert main([*args, "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["defended"]["defenses"] == ["topk:keep=0.1,scope=tensor"]
    assert report["accuracy_drop"] == pytest.approx(report["baseline"]["accuracy"] - report["defended"]["accuracy"])
    assert "accuracy drop" in capsys.readouterr().out
    assert main([*args, "-o", str(out)]) == 2  # never overwrites
    assert main(["utility", "--defense", "topk:keep=0"]) == 2
    assert "keep must be" in capsys.readouterr().err


def test_federated_average_weighs_clients_by_their_data():
    model = _linear()
    (x, y), big, small = _data(0, n=12), torch.arange(10), torch.arange(10, 12)
    updates = [simulate_client(model, x[s], y[s]) for s in (big, small)]
    mean = federated_average(updates, [10, 2])
    for i, t in enumerate(mean):
        torch.testing.assert_close(t, (10 * updates[0].tensors[i] + 2 * updates[1].tensors[i]) / 12)
    # a plain average differs: unequal shares are what the weights are for
    assert not torch.allclose(mean[1], (updates[0].tensors[1] + updates[1].tensors[1]) / 2)
    with pytest.raises(GradleakError, match="sizes"):
        federated_average(updates, [10, 0])


def test_training_passes_each_clients_share_size_to_the_average(monkeypatch):
    seen = []
    real = federated.federated_average
    monkeypatch.setattr(federated, "federated_average", lambda u, n: seen.append(list(n)) or real(u, n))
    shares = [torch.arange(0, 9), torch.arange(9, 12), torch.arange(12, 30)]
    config = FederatedTraining(clients=3, rounds=2, training=LocalTraining(protocol="fedavg", lr=0.5))
    train_federated(_linear(), _data(0, n=30), _data(1), config, shares=shares)
    assert seen == [[9, 3, 18], [9, 3, 18]]
