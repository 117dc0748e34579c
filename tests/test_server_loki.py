"""LOKI-style model inconsistency: per-client imprint bins survive secure aggregation and
every recovered sample is attributed to its client."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_lenet

from gradleak.attacks.loki import loki_readout
from gradleak.client import aggregate_clients, simulate_client
from gradleak.errors import GradleakError
from gradleak.records import Assumption, LocalTraining
from gradleak.server import SERVERS, parse_server

SHAPE = (3, 4, 4)


def _clients(n, per, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(per, *SHAPE, generator=gen), torch.randint(0, 4, (per,), generator=gen)) for _ in range(n)]


@pytest.mark.parametrize("training,dtype", [(LocalTraining(), torch.float32),
                                            (LocalTraining(protocol="fedavg", lr=0.01, batch_size=2), torch.float64)],
                         ids=["fedsgd", "fedavg"])
def test_attribution_is_exact_on_a_tiny_case(training, dtype):
    server = parse_server("loki:clients=3,bins=256,estimate=gaussian")
    models = server.build_clients(tiny_lenet(size=4, classes=4).to(dtype), SHAPE, seed=1)
    batches = [(x.to(dtype), y) for x, y in _clients(3, 3, seed=2)]
    agg = aggregate_clients(models.model, batches, training, weighting="weighted")
    rec = loki_readout(models, agg.update, agg.holdings.sizes)
    assert len(rec.data) == 9
    for j, (x, _) in enumerate(batches):
        got = rec.of(j)
        assert got.shape == (3, *SHAPE)
        d = torch.cdist(x.flatten(1).double(), got.flatten(1).double())
        # each of client j's images is read exactly, from client j's rows, and from no other client's
        assert (d.min(1).values <= 1e-4 * x.flatten(1).double().norm(dim=1)).all()
        others = torch.cat([xx for k, (xx, _) in enumerate(batches) if k != j]).flatten(1).double()
        assert torch.cdist(others, got.flatten(1).double()).min() > 0.1
        assert all(models.rows(j).start <= u < models.rows(j).stop for u in rec.unit[rec.client == j].tolist())


def test_other_clients_rows_never_fire_and_plain_imprint_mixes_clients():
    server = parse_server("loki:clients=3,bins=16,estimate=gaussian")
    models = server.build_clients(tiny_lenet(size=4, classes=4), SHAPE, seed=0)
    x, y = _clients(1, 5)[0]
    update = simulate_client(models.model(1), x, y).as_mapping()["imprint.bins.weight"]
    assert update[models.rows(1)].abs().sum() > 0
    assert torch.count_nonzero(update[:16]) == 0 and torch.count_nonzero(update[32:]) == 0
    # one model for all (what an honest-protocol imprint server must do): the sum mixes the clients
    batches = _clients(3, 3, seed=2)
    same = aggregate_clients(models.model(0), batches)
    assert torch.count_nonzero(same.update.as_mapping()["imprint.bins.bias"][16:]) == 0
    rec = loki_readout(models, same.update, same.holdings.sizes)
    assert set(rec.client.tolist()) == {0}  # everything lands on client 0's rows: no attribution possible


def test_spec_models_and_refusals():
    model = tiny_lenet(size=4, classes=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sm = parse_server("loki:clients=4,bins=8,client=2,estimate=gaussian").build(model, SHAPE)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert sm.malicious and sm.assumption is Assumption.MALICIOUS and sm.layer == "imprint.bins"
    assert sm.model.imprint.bins.weight.shape[0] == 32 and torch.count_nonzero(sm.model.imprint.bins.weight[:16]) == 0
    assert parse_server(sm.spec).spec() == sm.spec and "loki" in SERVERS
    with pytest.raises(GradleakError, match="client must be below clients"):
        parse_server("loki:clients=2,client=2")
    with pytest.raises(GradleakError, match="needs public images"):
        parse_server("loki").build(model, SHAPE)
    models = parse_server("loki:clients=2,bins=4,estimate=gaussian").build_clients(model, SHAPE)
    with pytest.raises(GradleakError, match="was not computed on the models"):
        loki_readout(models, simulate_client(model, *_clients(1, 2)[0]))
