"""A malicious server through `gradleak attack --server`, AuditConfig and the API."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_lenet

import gradleak
from gradleak.cli import main
from gradleak.client import simulate_client
from gradleak.errors import GradleakError
from gradleak.pipelines.audit import AuditConfig, run_audit
from gradleak.pipelines.write import unit_labels


def test_the_cli_attacks_through_an_imprint_server_and_records_it(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["attack", "-a", "imprint", "--server", "imprint:bins=64,public=digits", "-b", "8", "-q",
                 "-o", str(out)])
    assert code == 0
    assert "expects to recover" in capsys.readouterr().err  # said before the attack
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["server"] == "imprint:bins=64,public=digits"
    assert 5 in report["knowledge"]["assumption_levels"]
    server = report["server"]
    assert server["spec"].startswith("imprint:bins=64") and server["assumption_level"] == 5
    assert server["expected_fraction"] == pytest.approx((63 / 64) ** 7)
    assert server["recovered_40"] >= 0.5  # 8 samples in 64 bins: most are alone, and exact
    assert server["recovered_18"] >= server["recovered_40"]


def test_a_server_the_model_refuses_is_one_line_with_nothing_printed_or_written(tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["attack", "-a", "trap", "--server", "trap", "-m", "lenet", "-q", "-o", str(out)])
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "layer '0' is Conv2d" in lines[0], lines
    assert not out.exists()


def test_audit_config_checks_the_server_spec_early():
    with pytest.raises(GradleakError, match=r"server 'imprint' does not take \['bins_'\]"):
        AuditConfig(server="imprint:bins_=3")
    with pytest.raises(GradleakError, match="unknown server 'robber'"):
        AuditConfig.from_settings({"server": "robber"})
    assert AuditConfig().server is None


def test_an_honest_audit_has_no_server_outcome_and_a_trap_audit_has_one():
    honest = run_audit(AuditConfig(attack="analytic-fc", model="mlp", batch_size=2))
    assert honest.result.server is None and 5 not in [int(a) for a in honest.result.assumptions]
    trapped = run_audit(AuditConfig(attack="trap", model="mlp", batch_size=4, server="trap:fire=0.25"))
    assert trapped.result.server.spec == "trap:fire=0.25" and trapped.result.server.expected_fraction is None
    assert 5 in [int(a) for a in trapped.result.assumptions]
    # the grid labels each column with the units its reconstruction came from
    assert unit_labels(honest) is None
    labels = unit_labels(trapped)
    assert len(labels) == 4 and all(x == "-" or x.startswith("unit ") for x in labels)
    assert any(x.startswith("unit ") for x in labels)


def test_the_api_serves_a_malicious_model_and_reads_it():
    model = tiny_lenet(channels=3, size=4, classes=4)
    served = gradleak.serve(model, "imprint:bins=256,estimate=gaussian", input_shape=(3, 4, 4), seed=0)
    images = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    update = simulate_client(served.model, images, torch.tensor([0, 1, 2]))
    rec = gradleak.reconstruct(served.model, update, input_shape=(3, 4, 4), num_samples=3, attack="imprint",
                               bounds="none", server=served.spec, labels=[0, 1, 2])
    assert [int(a) for a in rec.assumptions] == [0, 5]
    assert torch.cdist(images.flatten(1), rec.data.flatten(1)).min(1).values.max() < 1e-4
    assert served.expected(3).p_all == pytest.approx((255 / 256) * (254 / 256))


# name -> (model maker, tiny options); must name every registered server
SERVER_CASES = {
    "honest": (lambda: tiny_lenet(channels=3, size=4, classes=4), {}),
    "imprint": (lambda: tiny_lenet(channels=3, size=4, classes=4), {"bins": 8, "estimate": "gaussian"}),
    "trap": (lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 16), torch.nn.ReLU(),
                                         torch.nn.Linear(16, 4)), {"fire": 0.2}),
    "fishing": (lambda: tiny_lenet(channels=3, size=4, classes=4), {"target": 1}),
    "loki": (lambda: tiny_lenet(channels=3, size=4, classes=4), {"clients": 3, "bins": 4, "client": 1,
                                                                  "estimate": "gaussian"}),
}


def test_every_server_has_a_case():
    from gradleak.server import SERVERS

    assert set(SERVER_CASES) == set(SERVERS.names())


@pytest.mark.parametrize("name", sorted(SERVER_CASES))
def test_server_invariants(name):
    from gradleak.server import SERVERS, parse_server

    make, options = SERVER_CASES[name]
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    behaviour = SERVERS.create(name, options)
    a = behaviour.build(model, (3, 4, 4), seed=3)
    b = parse_server(behaviour.spec()).build(model, (3, 4, 4), seed=3)  # the spec rebuilds the same server
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the caller's model untouched
    assert a.model is not model
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert a.malicious == (name != "honest") and a.spec == behaviour.spec()
    with pytest.raises(GradleakError, match=r"does not take \['bogus'\]; it takes: "):
        SERVERS.create(name, {"bogus": 1})
