"""The Flower audit: records, partitions, the report, and real Flower simulations (Ray).

The simulation tests need the `flower` extra and skip without it. They run a 2-client,
2-round federation twice, with and without `LeakageAudit`, and require bit-identical
global weights: with two clients FedAvg's weighted sum does not depend on the order in
which replies arrive, so any difference is the wrapper's doing.
"""

import json

import pytest
import torch

from gradleak.data.partition import split_dirichlet, split_iid
from gradleak.errors import GradleakError
from gradleak.flower.federation import FederationConfig, FederationResult
from gradleak.flower.records import AuditSchedule, ClientAudit, ClientData, TrainingKeys
from gradleak.flower.report import spearman, summarize, write_federation
from gradleak.records import ImageMetrics, LocalTraining, Protocol

TINY = dict(clients=2, rounds=2, samples_per_round=1, local_epochs=2, attack_options={"iterations": 60},
            igsa_samples=2, model_options={"hidden": (32,)})


# --- records and partitions (no Flower needed) -----------------------------------------------------------

def test_training_keys_read_the_sent_config_and_fall_back():
    keys = TrainingKeys(fallback=LocalTraining(protocol=Protocol.FEDAVG, lr=0.5, epochs=3, batch_size=4))
    t = keys.read({"lr": 0.1, "local-epochs": 2, "server-round": 1})
    assert (t.protocol, t.lr, t.epochs, t.batch_size) == (Protocol.FEDAVG, 0.1, 2, 4)
    assert keys.read({}).lr == 0.5
    with pytest.raises(GradleakError, match="lr must be a positive"):
        keys.read({"lr": -1.0})
    with pytest.raises(GradleakError, match="'local-epochs' must be a number, got 'two'"):
        keys.read({"local-epochs": "two"})


def test_schedule_rounds_and_validation():
    s = AuditSchedule(every=3)
    assert [r for r in range(1, 11) if s.due(r)] == [1, 4, 7, 10]
    with pytest.raises(GradleakError, match="every must be an integer >= 1, got 0"):
        AuditSchedule(every=0)
    with pytest.raises(GradleakError, match="max_clients"):
        AuditSchedule(max_clients=0)


def test_client_data_checks_shapes():
    img = torch.rand(2, 1, 4, 4)
    with pytest.raises(GradleakError, match="one entry per image"):
        ClientData("0", img, torch.tensor([0]), img, (0, 1))


def test_wrapper_rejects_bad_arguments_before_training():
    pytest.importorskip("flwr")
    from flwr.serverapp.strategy import FedAvg

    from gradleak.errors import UnknownNameError
    from gradleak.flower import LeakageAudit

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    with pytest.raises(GradleakError, match="strategy must be a flwr"):
        LeakageAudit("fedavg", model, input_shape=(1, 4, 4))
    with pytest.raises(UnknownNameError, match="psnr"):
        LeakageAudit(FedAvg(), model, input_shape=(1, 4, 4), identify_by=("sharpness",))
    with pytest.raises(GradleakError, match="igsa_samples must be an integer >= 0"):
        LeakageAudit(FedAvg(), model, input_shape=(1, 4, 4), igsa_samples=-1)
    with pytest.raises(GradleakError, match="input_shape"):
        LeakageAudit(FedAvg(), model, input_shape=(3, 8, 8))


def test_federation_config_rejects_bad_settings():
    with pytest.raises(GradleakError, match=r"audit_clients must be partition ids in \[0, 3\], got \[4\]"):
        FederationConfig(audit_clients=(4,))
    with pytest.raises(GradleakError, match="partition must be one of"):
        FederationConfig(partition="skewed")
    with pytest.raises(GradleakError, match="rounds must be an integer >= 1"):
        FederationConfig(rounds=0)


def test_dirichlet_split_covers_every_sample_once_and_is_seeded():
    labels = torch.arange(200) % 4
    shares = split_dirichlet(labels, 5, alpha=0.1, seed=3)
    assert sorted(torch.cat(shares).tolist()) == list(range(200))
    assert all(a.equal(b) for a, b in zip(shares, split_dirichlet(labels, 5, alpha=0.1, seed=3)))
    # small alpha skews labels: some client is dominated by one class, unlike an IID split
    top = max(torch.bincount(labels[s], minlength=4).max().item() / len(s) for s in shares)
    iid_top = max(torch.bincount(labels[s], minlength=4).max().item() / len(s) for s in split_iid(200, 5, 3))
    assert top > 0.8 > iid_top
    with pytest.raises(GradleakError, match="alpha must be a finite number > 0"):
        split_dirichlet(labels, 5, alpha=0.0, seed=0)


def _audit(r, psnr, igsa):
    m = ImageMetrics(values={"mse": (0.01,), "psnr": (psnr,), "ssim": (0.5,)}, assignment=(0,), baseline_psnr=(12.0,))
    return ClientAudit(server_round=r, node_id=7, client="0", num_samples=1, training=LocalTraining(), knows_training=False,
                       attack="ig", status="ok", update_norm=1.0, attack_seconds=1.0, audit_seconds=1.5, metrics=m,
                       igsa=igsa, accuracy=0.5, reconstruction=torch.rand(1, 1, 8, 8), original=torch.rand(1, 1, 8, 8))


def test_summary_correlations_and_written_folder(tmp_path):
    audits = tuple(_audit(r, 30.0 - 2 * r, 1.0 - 0.01 * r) for r in range(1, 6))
    result = FederationResult(FederationConfig(rounds=5), (0.5, 0.6, 0.7, 0.8, 0.85, 0.9), audits, {}, 3.0, True)
    s = summarize(result)
    assert [r.accuracy for r in s.rows] == [0.5, 0.6, 0.7, 0.8, 0.85]  # the model each round started from
    assert s.spearman_igsa_psnr == pytest.approx(1.0) and s.spearman_round_psnr == pytest.approx(-1.0)
    out = write_federation(result, tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == ["audits.jsonl", "federation.json", "leakage.png",
                                                    "reconstructions"]
    assert len((out / "audits.jsonl").read_text().splitlines()) == 5
    assert json.loads((out / "federation.json").read_text())["summary"]["spearman_round_psnr"] == pytest.approx(-1)
    assert (out / "leakage.png").read_bytes()[:4] == b"\x89PNG"


def test_spearman_needs_spread():
    assert spearman([1, 2], [3, 4]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


# --- real Flower simulations ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs():
    pytest.importorskip("flwr")
    from gradleak.flower import run_federation

    torch.set_num_threads(1)
    config = FederationConfig(**TINY)
    return run_federation(config, audit=True), run_federation(config, audit=False), run_federation(config)


def test_wrapper_leaves_the_aggregates_bit_identical(runs):
    audited, plain, _ = runs
    assert audited.final_state.keys() == plain.final_state.keys()
    assert all(torch.equal(audited.final_state[k], plain.final_state[k]) for k in plain.final_state)
    assert audited.accuracy == plain.accuracy
    # the training moved the weights: equality is not two untouched initial models
    from gradleak.flower.federation import build_federation

    initial = build_federation(FederationConfig(**TINY)).model.state_dict()
    assert any(not torch.equal(initial[k], plain.final_state[k]) for k in initial)


def test_identical_runs_give_identical_audits(runs):
    # attack seeds follow the client's stable identity, not Flower's random node ids
    first, _, again = runs
    assert [a.node_id for a in first.audits] != [a.node_id for a in again.audits]
    for a, b in zip(first.audits, again.audits, strict=True):
        assert (a.server_round, a.client) == (b.server_round, b.client)
        assert a.metrics.values == b.metrics.values and torch.equal(a.reconstruction, b.reconstruction)
        assert a.to_json()["verdict"] == b.to_json()["verdict"] and "server_round" in a.to_json()


def test_audits_score_the_audited_client_each_round(runs):
    audited, plain, _ = runs
    assert plain.audits == ()
    assert [(a.server_round, a.client, a.num_samples) for a in audited.audits] == [(1, "0", 1), (2, "0", 1)]
    from gradleak.flower.federation import build_federation

    fed = build_federation(FederationConfig(**TINY))
    for a in audited.audits:
        assert a.metrics is not None and len(a.metrics.psnr) == 1
        assert [i.metric for i in a.identification] == ["psnr", "ssim"]
        # the truth is the image client 0 drew in that round, and the grid shows it
        position = int(fed.round_positions(0, a.server_round)[0])
        assert all(i.true_index == (position,) for i in a.identification)
        assert torch.equal(a.original[0], fed.images[fed.partitions[0][position]])
        assert 0 < a.igsa <= 1 and 0 <= a.accuracy <= 1
        assert a.training.lr == FederationConfig().lr and a.training.epochs == 2 and not a.knows_training
        assert a.reconstruction.shape == a.original.shape == (1, 1, 32, 32)
    # round 1's attacker held the initial model: its accuracy is the federation's round-0 accuracy
    assert audited.audits[0].accuracy == audited.accuracy[0]


def test_cli_runs_a_federation_and_writes_its_folder(tmp_path, capsys):
    pytest.importorskip("flwr")
    from gradleak.cli import main

    out = tmp_path / "fed"
    argv = ["flower", "--clients", "2", "--rounds", "1", "--iterations", "40", "--igsa-samples", "1",
            "--model-opt", "hidden=[16]", "-o", str(out), "-q"]
    assert main(argv) == 0
    assert (out / "leakage.png").exists() and len((out / "audits.jsonl").read_text().splitlines()) == 1
    assert "Spearman" in capsys.readouterr().out
    assert main(argv) == 2  # the folder exists now
    assert "--overwrite" in capsys.readouterr().err
