"""The Flower red-team wrapper and the client's check as a client mod (no simulation: the
mod and the wrapper are called with hand-made messages)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

flwr = pytest.importorskip("flwr")

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from gradleak.errors import GradleakError  # noqa: E402
from gradleak.flower.redteam import REFUSED, RedTeam, check_mod  # noqa: E402
from gradleak.server import parse_server  # noqa: E402

SHAPE = (1, 8, 8)


@pytest.fixture(autouse=True)
def _identity():
    # messages made outside a running Flower app need a run identity
    old = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id) if hasattr(TaskIdentity, "_run_id") \
        else None
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    if old is not None:
        TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = old


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))


def _train_message(state, node=7):
    return Message(content=RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"server-round": 2})}),
                   dst_node_id=node, message_type="train")


def _context():
    return Context(run_id=1, node_id=7, node_config={"partition-id": 0}, state=RecordDict(), run_config={})


def test_the_mod_refuses_a_trap_model_and_says_why_and_passes_an_honest_one():
    model = _mlp()
    data = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    mod = check_mod(model, lambda ctx: data)
    called = []

    def call_next(msg, ctx):
        called.append(msg)
        return Message(content=RecordDict({"metrics": flwr.app.MetricRecord({"num-examples": 16})}), reply_to=msg)

    reply = mod(_train_message(model.state_dict()), _context(), call_next)
    assert not reply.has_error() and len(called) == 1
    trap = parse_server("trap:fire=0.05").build(model, SHAPE, seed=0).model
    reply = mod(_train_message(trap.state_dict()), _context(), call_next)
    assert reply.has_error() and len(called) == 1  # the client never trained
    assert reply.error.code == REFUSED and reply.error.reason.startswith("refused to train: rare '1'")
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2)).state_dict()
    reply = mod(_train_message(wrong), _context(), call_next)
    assert reply.has_error() and "architecture" in reply.error.reason


class _Grid:
    def get_node_ids(self):
        return [7, 8]


def test_red_team_sends_the_malicious_model_in_its_rounds_and_keeps_training_honest():
    model = _mlp()
    red = RedTeam(FedAvg(min_train_nodes=2, min_available_nodes=2), model, input_shape=SHAPE,
                  server="trap:fire=0.1", rounds=[2])
    arrays = ArrayRecord(model.state_dict())
    honest = list(red.configure_train(1, arrays, ConfigRecord(), _Grid()))
    assert all(torch.equal(m.content["arrays"].to_torch_state_dict()["1.weight"], model[1].weight) for m in honest)
    sent = list(red.configure_train(2, arrays, ConfigRecord(), _Grid()))
    bad = sent[0].content["arrays"].to_torch_state_dict()
    assert not torch.equal(bad["1.weight"], model[1].weight)
    # a client that adds d to what it got: the aggregate is the global model + d
    d = {k: torch.full_like(v, 0.5) for k, v in bad.items()}
    replies = [Message(content=RecordDict({"arrays": ArrayRecord({k: bad[k] + d[k] for k in bad}),
                                           "metrics": flwr.app.MetricRecord({"num-examples": 4})}), reply_to=m)
               for m in sent]
    refused = Message(flwr.app.Error(code=REFUSED, reason="refused to train: rare"), reply_to=sent[1])
    agg, _ = red.aggregate_train(2, replies + [refused])  # a refusal is recorded and not aggregated
    out = agg.to_torch_state_dict()
    assert all(torch.allclose(out[k], model.state_dict()[k] + 0.5) for k in out)
    assert red.refusals == [(2, sent[1].metadata.dst_node_id, "refused to train: rare")]
    with pytest.raises(GradleakError, match="changes the architecture"):
        RedTeam(FedAvg(), model, input_shape=SHAPE, server="imprint:estimate=gaussian,bins=4",
                rounds=[1]).malicious_state(arrays, 1)
