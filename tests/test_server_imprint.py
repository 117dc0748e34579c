"""The malicious server's imprint block (Robbing the Fed) and its read-out.

Exact recovery of every sample alone in a bin; the expectation formula against a Monte
Carlo count and against the attack's own count on data drawn from the server's assumed
distribution; refusals naming the layer; the server spec and the assumption level.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_lenet

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.errors import GradleakError, UnknownNameError
from gradleak.records import Assumption, AttackerKnowledge, LabelKnowledge, LocalTraining
from gradleak.server import SERVERS, ServerModel, expected_recovery, parse_server

SHAPE = (3, 4, 4)  # 48 features: pixels i.i.d. N(0, 1) make the unit-norm measurement N(0, 1)


def _model(classes: int = 4):
    return tiny_lenet(channels=3, size=4, classes=classes)


def _attack(server: ServerModel, images, labels, training=LocalTraining()):
    update = simulate_client(server.model, images, labels, training)
    knowledge = AttackerKnowledge(num_samples=len(images), input_shape=SHAPE, num_classes=4, server=server.spec,
                                  label_knowledge=LabelKnowledge.GIVEN, labels=labels)
    return ATTACKS.create("imprint", {}).reconstruct(server.model, update, knowledge)


def _alone(server: ServerModel, images) -> torch.Tensor:
    """Which samples are alone between two neighbouring thresholds (or above the top one)."""
    block = server.model.imprint.bins
    m = images.flatten(1).double() @ block.weight[0].double()
    c = (-block.bias.detach().double()).sort().values
    bin_of = torch.searchsorted(c, m) - 1  # index of the highest threshold below m
    counts = torch.bincount(bin_of, minlength=len(c))
    return counts[bin_of] == 1


def _exact(rec, images, tol=1e-4) -> torch.Tensor:
    """Which images some reconstruction row equals (relative distance <= tol)."""
    d = torch.cdist(images.flatten(1).double(), rec.data.flatten(1).double())
    return d.min(1).values <= tol * images.flatten(1).double().norm(dim=1)


FEDAVG = LocalTraining(protocol="fedavg", lr=0.01, batch_size=2)


@pytest.mark.parametrize("training,dtype,back", [(LocalTraining(), torch.float32, "shared"),
                                                 (FEDAVG, torch.float64, "shared"),
                                                 (FEDAVG, torch.float64, "fixed")],
                         ids=["fedsgd", "fedavg", "fedavg-fixed-back"])
def test_every_sample_alone_in_a_bin_is_recovered_exactly(training, dtype, back):
    # FedAvg in float64: its delta is a difference of weights, which float32 rounds (see Imprint's gain)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(6, *SHAPE, generator=gen, dtype=dtype)
    server = parse_server(f"imprint:bins=64,estimate=gaussian,back={back}").build(_model().to(dtype), SHAPE, seed=1)
    alone = _alone(server, images)
    assert alone.sum() >= 4  # the draw leaves most samples alone: the check below means something
    rec = _attack(server, images, torch.tensor([0, 1, 2, 3, 0, 1]), training)
    exact = _exact(rec, images)
    assert torch.equal(exact[alone], torch.ones_like(exact[alone]))
    # samples that share a bin come out mixed, never exact
    assert not exact[~alone].any()
    assert rec.assumptions == (Assumption.BASIC, Assumption.MALICIOUS)
    # every reconstructed sample names the unit it came from
    assert sum(1 for u in rec.units if u) >= int(alone.sum())


def test_all_alone_gives_the_whole_batch_exactly():
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(3, *SHAPE, generator=gen)
    server = parse_server("imprint:bins=256,estimate=gaussian").build(_model(), SHAPE, seed=0)
    assert _alone(server, images).all()
    rec = _attack(server, images, torch.tensor([0, 1, 2]))
    assert _exact(rec, images, 1e-5).all() and rec.status == "ok"


def test_the_server_model_changes_the_function_little_and_leaves_the_caller_alone():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    server = parse_server("imprint:bins=32,estimate=gaussian,scale=0.01").build(model, SHAPE, seed=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    x = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(server.model(x), model(x), atol=1e-2)
    assert server.malicious and server.assumption is Assumption.MALICIOUS and server.layer == "imprint.bins"
    assert server.spec.startswith("imprint:bins=32,measure=random,estimate=gaussian,loc=0.0,std=1.0,scale=0.01")
    assert parse_server(server.spec).spec() == server.spec  # specs round trip
    assert not SERVERS.create("honest").build(model, SHAPE).malicious


@pytest.mark.parametrize("bins,n", [(16, 10), (8, 8), (64, 20)])
def test_expectation_against_a_monte_carlo_count(bins, n):
    exp = expected_recovery(n, bins)
    gen = torch.Generator().manual_seed(bins * n)
    trials = 20000
    draws = torch.randint(0, bins, (trials, n), generator=gen)
    counts = torch.zeros(trials, bins).scatter_add_(1, draws, torch.ones(trials, n))
    alone = (counts == 1).sum(1).double()
    all_distinct = (counts.max(1).values == 1).double()
    assert abs(alone.mean() - exp.expected) < 4 * alone.std() / math.sqrt(trials)
    p = exp.p_all
    assert abs(all_distinct.mean() - p) < 4 * math.sqrt(max(p * (1 - p), 1e-4) / trials)


def test_expectation_with_unequal_bins_against_a_monte_carlo_count():
    probs = torch.tensor([0.4, 0.3, 0.1, 0.1, 0.05])  # 0.05 reaches no bin
    exp = expected_recovery(4, probabilities=probs.tolist())
    gen = torch.Generator().manual_seed(0)
    trials = 40000
    draws = torch.multinomial(torch.cat([probs, torch.tensor([0.05])]), trials * 4, replacement=True,
                              generator=gen).reshape(trials, 4)
    counts = torch.zeros(trials, 6).scatter_add_(1, draws, torch.ones(trials, 4))[:, :5]
    alone = (counts == 1).sum(1).double()
    assert abs(alone.mean() - exp.expected) < 4 * alone.std() / math.sqrt(trials)
    distinct = ((counts.sum(1) == 4) & (counts.max(1).values == 1)).double().mean()
    assert abs(distinct - exp.p_all) < 0.01
    assert expected_recovery(5, 4).p_all == 0.0 and expected_recovery(1, 4).fraction == 1.0


def test_the_attack_recovers_what_the_formula_expects():
    # data drawn from the server's assumed Gaussian: bins equally likely, the formula holds
    bins, n, rounds = 16, 12, 25
    server = parse_server(f"imprint:bins={bins},estimate=gaussian").build(_model(), SHAPE, seed=3)
    gen = torch.Generator().manual_seed(5)
    found = []
    for _ in range(rounds):
        images = torch.randn(n, *SHAPE, generator=gen)
        found.append(int(_exact(_attack(server, images, torch.randint(0, 4, (n,), generator=gen)), images).sum()))
    expected = expected_recovery(n, bins).expected  # 5.0
    sd = math.sqrt(sum((f - sum(found) / rounds) ** 2 for f in found) / (rounds - 1))
    assert abs(sum(found) / rounds - expected) < 3.5 * sd / math.sqrt(rounds)


def test_refusals_name_the_layer_and_the_option():
    model = _model()
    images, labels = torch.randn(2, *SHAPE), torch.tensor([0, 1])
    update = simulate_client(model, images, labels)
    knowledge = AttackerKnowledge(num_samples=2, input_shape=SHAPE, num_classes=4)
    with pytest.raises(GradleakError, match=r"first layer '0' is Conv2d.*--server imprint"):
        ATTACKS.create("imprint", {}).reconstruct(model, update, knowledge)
    with pytest.raises(GradleakError, match="does not take inputs of shape"):
        parse_server("imprint:estimate=gaussian").build(model, (3, 5, 7))
    with pytest.raises(GradleakError, match="needs public images"):
        parse_server("imprint").build(model, SHAPE)
    with pytest.raises(GradleakError, match=r"does not take \['bogus'\]; it takes: bins=128"):
        parse_server("imprint:bogus=1")
    with pytest.raises(GradleakError, match="measure must be one of 'brightness', 'random'"):
        parse_server("imprint:measure=colour")
    with pytest.raises(UnknownNameError, match="known servers: " + ", ".join(SERVERS.names())):
        parse_server("robber")
    with pytest.raises(GradleakError, match="public must be a tensor"):
        parse_server("imprint").build(model, SHAPE, public=torch.randn(4, 3, 8, 8))


def test_public_quantiles_make_equally_likely_bins():
    gen = torch.Generator().manual_seed(0)
    public = torch.randn(4000, *SHAPE, generator=gen) * 0.5 + 0.3
    server = parse_server("imprint:bins=8,measure=brightness").build(_model(), SHAPE, public=public)
    fresh = torch.randn(4000, *SHAPE, generator=gen) * 0.5 + 0.3
    block = server.model.imprint.bins
    c = (-block.bias.detach()).sort().values
    share = torch.bincount(torch.searchsorted(c, fresh.flatten(1) @ block.weight[0]) - 1, minlength=8) / 4000
    assert torch.allclose(share, torch.full((8,), 1 / 8), atol=0.025)
