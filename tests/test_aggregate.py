"""Secure aggregation: the server's observation is the (weighted) sum of the clients' updates."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_lenet

from gradleak.client import aggregate_clients, simulate_client
from gradleak.errors import GradleakError
from gradleak.records import LocalTraining

SHAPE = (3, 8, 8)


def _batches(n_clients=3, per=(2, 3, 4), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(per[j], *SHAPE, generator=gen), torch.randint(0, 4, (per[j],), generator=gen))
            for j in range(n_clients)]


@pytest.mark.parametrize("training", [LocalTraining(), LocalTraining(protocol="fedavg", lr=0.05, batch_size=2)],
                         ids=["fedsgd", "fedavg"])
@pytest.mark.parametrize("weighting", ["sum", "mean", "weighted"])
def test_the_aggregate_is_the_weighted_sum_of_the_clients_updates(training, weighting):
    model = tiny_lenet(size=8, classes=4)
    batches = _batches()
    agg = aggregate_clients(model, batches, training, weighting=weighting, seed=5)
    singles = [simulate_client(model, x, y, training, seed=5 + j) for j, (x, y) in enumerate(batches)]
    w = {"sum": [1, 1, 1], "mean": [1 / 3] * 3, "weighted": [2 / 9, 3 / 9, 4 / 9]}[weighting]
    assert agg.holdings.weights == pytest.approx(w)
    for i, t in enumerate(agg.update.tensors):
        expect = sum(wj * u.tensors[i] for wj, u in zip(w, singles))
        assert torch.allclose(t, expect, atol=1e-7, rtol=1e-6)
    assert agg.update.num_samples == 9 and agg.holdings.total == 9 and agg.holdings.clients == 3
    assert agg.holdings.offsets == (0, 2, 5, 9)
    assert agg.holdings.owner().tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2]


def test_weighted_fedsgd_aggregate_is_the_gradient_of_the_whole_batch():
    model = tiny_lenet(size=8, classes=4)
    batches = _batches()
    agg = aggregate_clients(model, batches, LocalTraining(), weighting="weighted")
    whole = simulate_client(model, torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))
    for a, b in zip(agg.update.tensors, whole.tensors):
        assert torch.allclose(a, b, atol=1e-6)


def test_one_model_per_client_and_refusals():
    models = [tiny_lenet(size=8, classes=4, seed=s) for s in range(3)]
    batches = _batches()
    agg = aggregate_clients(models, batches, weighting="sum")
    singles = [simulate_client(m, x, y, seed=j) for j, (m, (x, y)) in enumerate(zip(models, batches))]
    assert torch.allclose(agg.update.tensors[0], sum(u.tensors[0] for u in singles))
    with pytest.raises(GradleakError, match="one model or one per client"):
        aggregate_clients(models[:2], batches)
    with pytest.raises(GradleakError, match="weighting must be one of"):
        aggregate_clients(models[0], batches, weighting="median")
    with pytest.raises(GradleakError, match="does not match update 0"):
        aggregate_clients([models[0], tiny_lenet(size=8, classes=5), models[2]], batches)


def test_client_batches_are_disjoint_draws_from_each_clients_share():
    from gradleak.data.clients import client_batches
    from gradleak.data.registry import load_dataset

    data = load_dataset("digits", None, split="train")
    for partition in ("iid", "dirichlet"):
        batches, held = client_batches(data, 10, 8, partition=partition, alpha=0.3, seed=1)
        flat = torch.cat(held)
        assert len(batches) == 10 and flat.unique().numel() == 80
        assert all(torch.equal(x, data.images[h]) and torch.equal(y, data.labels[h]) for (x, y), h in zip(batches, held))
    skew = [len(h_labels.unique()) for h_labels in (data.labels[h] for h in client_batches(
        data, 10, 8, partition="dirichlet", alpha=0.05, seed=0)[1])]
    assert sum(skew) / len(skew) < 5  # label-skewed: few classes per client
    with pytest.raises(GradleakError, match="exceeds"):
        client_batches(data, 1000, 8)
