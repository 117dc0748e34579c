"""Red-teaming one's own Flower deployment: a malicious-server strategy wrapper and the
client's check as a client mod.

`RedTeam` wraps any message-based Flower strategy and, in the rounds it names, sends the
model a malicious server behaviour (`gradleak.server`, e.g. trap weights) builds from the
global model instead of the global model itself (threat level 5: for auditing a
deployment, never for use against others). It keeps the training honest: a reply trained
from the malicious model is turned back into the global model plus the client's delta
before the wrapped strategy aggregates it. Wrap it in `LeakageAudit` (with the server's
read-out as the attack) to measure what the round leaks.

`check_mod` is a Flower client mod: before a train message reaches the client, it loads
the received arrays into the client's expected architecture and runs
`gradleak.client.check.check_model` on the client's own data; a suspicious model is
refused with an error reply whose reason lists the findings (the client does not train).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import nn

from gradleak.checks import check_seed
from gradleak.client.check import CheckThresholds, check_model
from gradleak.errors import GradleakError
from gradleak.server import ServerBehaviour, parse_server

log = logging.getLogger(__name__)

REFUSED = 4190  # the error code of a refused train message


class RedTeam(Strategy):
    """Send `server`'s model instead of the global one in `rounds` (to the nodes in
    `nodes`, None: all); everything else is `strategy`'s.

    Args:
        strategy: any message-based Flower strategy.
        model: the architecture of the arrays (weights ignored).
        input_shape: one sample's shape in model space.
        server: a `ServerBehaviour` or spec ("trap:fire=0.125"); its model must keep the
            architecture (Flower clients load the arrays into their own model).
        rounds: the malicious rounds.
        public: public images (model space) the behaviour estimates from.
    """

    def __init__(self, strategy: Strategy, model: nn.Module, *, input_shape: tuple[int, ...],
                 server: ServerBehaviour | str, rounds: Iterable[int], nodes: Iterable[int] | None = None,
                 public: torch.Tensor | None = None, seed: int = 0) -> None:
        if not isinstance(strategy, Strategy):
            raise GradleakError(f"strategy must be a flwr.serverapp.strategy.Strategy, got {type(strategy).__name__}")
        self.strategy = strategy
        self.model = copy.deepcopy(model).eval()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.server = parse_server(server)
        self.rounds = {int(r) for r in rounds}
        self.nodes = None if nodes is None else {int(n) for n in nodes}
        self.public = public
        self.seed = check_seed(seed)
        self._sent: dict[int, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}
        self.refusals: list[tuple[int, int, str]] = []  # (round, node, the client's reason)

    def malicious_state(self, arrays: ArrayRecord, server_round: int) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(self.model)
        model.load_state_dict(arrays.to_torch_state_dict(keep_input=True))
        built = self.server.build(model, self.input_shape, seed=self.seed + server_round, public=self.public)
        state = built.model.state_dict()
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if {k: tuple(v.shape) for k, v in state.items()} != want:
            raise GradleakError(f"server {self.server.spec()!r} changes the architecture; a Flower client loads the "
                                "arrays into its own model: use a behaviour that keeps it (trap)")
        return {k: v.detach().clone() for k, v in state.items()}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self._sent = {}
        if server_round not in self.rounds:
            return messages
        honest = {k: v.clone() for k, v in arrays.to_torch_state_dict(keep_input=True).items()}
        bad = self.malicious_state(arrays, server_round)
        out = []
        for m in messages:
            node = m.metadata.dst_node_id
            if self.nodes is not None and node not in self.nodes:
                out.append(m)
                continue
            content = RecordDict({k: v for k, v in m.content.items()})
            key = next(k for k, v in m.content.items() if isinstance(v, ArrayRecord))
            content[key] = ArrayRecord(bad)
            out.append(Message(content=content, dst_node_id=node, message_type=m.metadata.message_type))
            self._sent[node] = (honest, bad)
        log.warning("RedTeam: round %d sends %s to %d node(s)", server_round, self.server.spec(), len(self._sent))
        return out

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        fixed = []
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():  # recorded, and not passed on (a strategy may read every reply's content)
                self.refusals.append((server_round, node, str(reply.error.reason)))
                continue
            if node in self._sent and not reply.has_error() and reply.has_content():
                honest, bad = self._sent[node]
                key = next(k for k, v in reply.content.items() if isinstance(v, ArrayRecord))
                after = reply.content[key].to_torch_state_dict(keep_input=True)
                content = RecordDict({k: v for k, v in reply.content.items()})
                content[key] = ArrayRecord({k: honest[k] + (after[k] - bad[k]) for k in honest})
                reply = copy.copy(reply)  # the caller's reply (and any audit's copy of it) stays as it was
                reply.content = content
            fixed.append(reply)
        self._sent = {}
        return self.strategy.aggregate_train(server_round, fixed)

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()
        log.info("RedTeam: %s in rounds %s", self.server.spec(), sorted(self.rounds))

    def __getattr__(self, name: str) -> Any:
        if name == "strategy":
            raise AttributeError(name)
        return getattr(self.strategy, name)


def check_mod(model: nn.Module, data: Callable[[Context], torch.Tensor], *,
              thresholds: CheckThresholds = CheckThresholds(),
              on_verdict: Callable[[Context, Any], None] | None = None):
    """A Flower client mod that refuses to train on a suspicious model.

    `model` is the architecture the client expects; `data(context)` the client's own
    images in model space; `on_verdict(context, ModelCheck)` sees every verdict.
    """
    expected = copy.deepcopy(model).eval()

    def mod(msg: Message, context: Context, call_next) -> Message:
        if msg.metadata.message_type.split(".")[0] != "train" or not msg.has_content():
            return call_next(msg, context)
        arrays = next((v for v in msg.content.values() if isinstance(v, ArrayRecord)), None)
        if arrays is None:
            return call_next(msg, context)
        received = copy.deepcopy(expected)
        try:
            received.load_state_dict(arrays.to_torch_state_dict(keep_input=True))
        except (RuntimeError, KeyError) as exc:
            reason = f"architecture: the arrays do not fit the expected model ({str(exc).splitlines()[0]})"
            return Message(Error(code=REFUSED, reason=f"refused to train: {reason}"), reply_to=msg)
        verdict = check_model(received, data(context), expected=expected, thresholds=thresholds)
        if on_verdict is not None:
            on_verdict(context, verdict)
        if verdict.suspicious:
            return Message(Error(code=REFUSED, reason="refused to train: " + "; ".join(verdict.reasons)),
                           reply_to=msg)
        return call_next(msg, context)

    return mod


@dataclass(frozen=True)
class RedTeamResult:
    """A red-teamed federation: its result (audits included) and the refusals the
    servers received: (round, partition or node id, the client's reason)."""

    result: Any  # FederationResult
    refusals: tuple[tuple[int, int, str], ...]


def run_red_team(config, *, server: ServerBehaviour | str, rounds: Iterable[int], attack: str = "trap",
                 client_check: bool = False, thresholds: CheckThresholds = CheckThresholds()) -> RedTeamResult:
    """`gradleak.flower.run_federation`'s federation with `server` sent in `rounds`, every
    audited client's update attacked with `attack`, and (with `client_check`) every client
    running `check_mod` before it trains."""
    import time

    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg

    from gradleak.attacks import ATTACKS
    from gradleak.flower.federation import FederationResult, _ordered, build_federation, client_app, simulate
    from gradleak.flower.records import AuditSchedule
    from gradleak.flower.strategy import LeakageAudit
    from gradleak.metrics import test_accuracy

    start = time.perf_counter()
    c = config
    fed = build_federation(c)
    inner = client_app(fed)
    mods = []
    if client_check:
        def own_data(context: Context) -> torch.Tensor:
            share = fed.partitions[int(context.node_config["partition-id"])]
            return fed.normalization.normalize(fed.images[share])
        mods.append(check_mod(fed.model, own_data, thresholds=thresholds))
    app = ClientApp(mods=mods)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return inner(msg, context)

    outcome: dict[str, Any] = {}

    def evaluate(server_round: int, arrays) -> MetricRecord:
        model = copy.deepcopy(fed.model)
        model.load_state_dict(arrays.to_torch_state_dict())
        return MetricRecord({"accuracy": test_accuracy(model, *fed.test)})

    def truth(server_round: int, reply):
        record = reply.content.config_records.get("gradleak")
        return None if record is None else fed.client_data(int(record["partition-id"]), server_round)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        base = _ordered(FedAvg)(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=c.clients,
                                min_available_nodes=c.clients)
        red = RedTeam(base, fed.model, input_shape=fed.input_shape, server=server, rounds=rounds,
                      public=fed.test[0], seed=c.seed)
        audit = LeakageAudit(red, fed.model, input_shape=fed.input_shape, attack=ATTACKS.create(attack),
                             schedule=AuditSchedule(every=1, max_clients=len(c.audit_clients),
                                                    clients={str(p) for p in c.audit_clients}),
                             normalization=fed.normalization, truth=truth, test_data=fed.test, igsa_samples=0,
                             keep_images=False, seed=c.seed)
        outcome["result"] = audit.start(grid=grid, initial_arrays=ArrayRecord(fed.model.state_dict()),
                                        num_rounds=c.rounds,
                                        train_config=ConfigRecord({"lr": c.lr, "local-epochs": c.local_epochs,
                                                                   "batch-size": c.local_batch_size}),
                                        evaluate_fn=evaluate)
        outcome["audits"] = tuple(audit.audits)
        outcome["refusals"] = tuple(red.refusals)

    history, final = simulate(server_app, app, c.clients, c.rounds, outcome)
    return RedTeamResult(FederationResult(c, history, outcome["audits"], final, time.perf_counter() - start,
                                          True), outcome["refusals"])


__all__ = ["REFUSED", "RedTeam", "RedTeamResult", "check_mod", "run_red_team"]
