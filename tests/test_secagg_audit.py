"""`--clients N --secure-aggregation`: the audit attacks the secure aggregate of N clients."""

from __future__ import annotations

import json

import pytest
import torch

from gradleak.cli import main
from gradleak.client import simulate_client
from gradleak.data import DataSource, load_case
from gradleak.errors import GradleakError
from gradleak.pipelines.audit import defense_seed_of
from gradleak.pipelines.config import AuditConfig
from gradleak.pipelines.secagg import observe_aggregate
from gradleak.records import LocalTraining
from gradleak.sweep.spec import make_cell

TINY = {"model": "mlp", "dataset": "digits", "attack": "analytic-fc", "batch_size": 2}


def test_cli_attacks_the_aggregate_of_three_clients(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["attack", "-m", "mlp", "-d", "digits", "--clients", "3", "--secure-aggregation", "-b", "2",
                 "-a", "analytic-fc", "-o", str(out), "-q"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    s = result["settings"]
    assert s["clients"] == 3 and s["secure_aggregation"] is True
    assert s["samples_behind_update"] == 6 and s["client_sizes"] == [2, 2, 2]
    assert s["client_of_sample"] == [0, 0, 1, 1, 2, 2]
    assert len(set(s["indices"])) == 6  # no two clients hold the same sample
    psnr = result["per_sample"]["psnr"]
    assert len(psnr) == 6  # recover-and-match against all clients' samples
    assert sorted(result["per_sample"]["assignment"]) == list(range(6))
    # the analytic read-out recovers the samples whose label no other sample in the aggregate has
    fractions = [sum(p >= 40 for p in psnr[2 * j:2 * j + 2]) / 2 for j in range(3)]
    assert s["recovered_40_per_client"] == fractions and sum(p >= 40 for p in psnr) >= 1
    assert any("secure aggregation" in n and "3 clients" in n for n in result["notes"])


def test_aggregate_is_the_gradient_of_the_mean_loss_over_all_clients():
    """FedSGD, equal batches, FedAvg weights: the observed update is the sum of the clients'
    updates with weight 1/N, i.e. the gradient of the mean loss over the concatenated batch."""
    config = AuditConfig(**TINY, clients=3, secure_aggregation=True)
    case = load_case(DataSource("digits"), "mlp", seed=0)
    training = LocalTraining()
    seen = observe_aggregate(config, case, case.model, training, config.defense(), torch.device("cpu"),
                             defense_seed_of)
    assert seen.update.num_samples == 6 and seen.holdings.sizes == (2, 2, 2)
    x = case.normalization.normalize(seen.images)
    whole = simulate_client(case.model, x, seen.labels, training, seed=0)
    for a, b in zip(seen.update.tensors, whole.tensors):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    parts = [simulate_client(case.model, x[2 * j:2 * j + 2], seen.labels[2 * j:2 * j + 2], training, seed=j)
             for j in range(3)]
    for i, a in enumerate(seen.update.tensors):
        torch.testing.assert_close(a, sum(p.tensors[i] for p in parts) / 3, rtol=1e-5, atol=1e-6)


def test_defense_is_applied_per_client_before_the_sum():
    config = AuditConfig(**TINY, clients=2, secure_aggregation=True, defenses=("qsgd:bits=2",))
    case = load_case(DataSource("digits"), "mlp", seed=0)
    seen = observe_aggregate(config, case, case.model, LocalTraining(), config.defense(), torch.device("cpu"),
                             defense_seed_of)
    assert seen.update.defenses == ("qsgd:bits=2",)
    plain = observe_aggregate(AuditConfig(**TINY, clients=2, secure_aggregation=True), case, case.model,
                              LocalTraining(), AuditConfig(**TINY).defense(), torch.device("cpu"), defense_seed_of)
    assert any(not torch.equal(a, b) for a, b in zip(seen.update.tensors, plain.update.tensors))


@pytest.mark.parametrize("settings, words", [
    ({"clients": 3}, "needs secure_aggregation"),
    ({"clients": 0, "secure_aggregation": True}, "clients"),
    ({"clients": 2, "secure_aggregation": True, "indices": (0, 1)}, "indices cannot"),
    ({"clients": 2, "secure_aggregation": True, "partition": "zipf"}, "partition"),
    ({"clients": 2, "secure_aggregation": True, "dirichlet_alpha": -1}, "dirichlet_alpha"),
    ({"clients": 2, "secure_aggregation": True, "defenses": ("qsgd:bits=4",), "knows_defense": True},
     "knows_defense"),
    ({"clients": 2, "secure_aggregation": True, "server": "loki:clients=2,estimate=gaussian"}, "loki_readout"),
    ({"secure_aggregation": "yes"}, "secure_aggregation"),
])
def test_bad_aggregation_settings_fail_in_one_line(settings, words):
    with pytest.raises(GradleakError) as err:
        AuditConfig.from_settings({**TINY, **settings})
    message = str(err.value)
    assert words in message and "\n" not in message


def test_default_settings_keep_their_sweep_cell_keys():
    """The new fields are left out of to_dict at their defaults, so earlier stores keep their keys."""
    assert "clients" not in AuditConfig(**TINY).to_dict()
    plain = make_cell(dict(TINY), {}, ("psnr",), "cell")
    explicit = make_cell({**TINY, "clients": 1, "secure_aggregation": False}, {}, ("psnr",), "cell")
    assert plain.key == explicit.key
    swept = make_cell({**TINY, "clients": 4, "secure_aggregation": True}, {"clients": 4}, ("psnr",), "cell")
    assert swept.key != plain.key and swept.settings["clients"] == 4
    assert AuditConfig(**TINY, clients=4, secure_aggregation=True).samples_behind() == 8


def test_fedavg_aggregate_is_the_weighted_sum_of_each_clients_local_training():
    config = AuditConfig(**TINY, clients=2, secure_aggregation=True, protocol="fedavg", epochs=2,
                         local_batch_size=1, partition="dirichlet", dirichlet_alpha=0.3)
    case = load_case(DataSource("digits"), "mlp", seed=0)
    training = config.training()
    seen = observe_aggregate(config, case, case.model, training, config.defense(), torch.device("cpu"),
                             defense_seed_of)
    assert seen.update.local_steps == 4 and seen.update.num_samples == 4
    x = case.normalization.normalize(seen.images)
    parts = [simulate_client(case.model, x[2 * j:2 * j + 2], seen.labels[2 * j:2 * j + 2], training, seed=j)
             for j in range(2)]
    for i, a in enumerate(seen.update.tensors):
        torch.testing.assert_close(a, (parts[0].tensors[i] + parts[1].tensors[i]) / 2, rtol=1e-5, atol=1e-6)


def test_one_client_under_secure_aggregation_is_the_single_client_audit():
    from gradleak.pipelines.audit import run_audit

    plain = run_audit(AuditConfig(**TINY))
    summed = run_audit(AuditConfig(**TINY, secure_aggregation=True))
    assert plain.result.metrics.psnr == summed.result.metrics.psnr
    assert plain.result.settings["indices"] == summed.result.settings["indices"]
