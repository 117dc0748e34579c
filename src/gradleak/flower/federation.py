"""An example Flower federation on built-in data, audited round by round.

N simulated clients (Flower's Ray-backed simulation) hold IID or Dirichlet label-skewed
shares of a dataset. Each round every client trains from the global model on a fresh,
seeded draw of `samples_per_round` of its samples (cross-device clients with a little
new data per round) for `local_epochs` epochs of plain SGD, and FedAvg averages the
weights. `LeakageAudit` attacks the updates of the audited clients every
`audit_every` rounds. The server's accuracy curve comes from Flower's central
evaluation (round 0 is the initial model).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from gradleak.checks import check_seed
from gradleak.devices import check_device_spec, resolve_device
from gradleak.errors import GradleakError
from gradleak.flower.records import (
    INSTALL_HINT,
    AuditSchedule,
    ClientAudit,
    ClientData,
    TrainingKeys,
)
from gradleak.records import LocalTraining, Protocol, check_model_mode

log = logging.getLogger(__name__)

PARTITIONS = ("iid", "dirichlet")
CLIENT_RECORD = "gradleak"  # the reply's ConfigRecord naming the client's partition (simulation only)


@dataclass(frozen=True)
class FederationConfig:
    """Every setting of the example federation. Defaults train an MLP on the built-in
    faces (face / not a face) to about 90% test accuracy in 10 rounds, one new image per
    client per round, in about 2 minutes on 2 CPU cores with one audit per round."""

    dataset: str = "faces"
    model: str = "mlp"
    model_options: Mapping[str, Any] = field(default_factory=dict)
    clients: int = 4
    rounds: int = 10
    partition: str = "iid"
    alpha: float = 0.5  # Dirichlet concentration of the label-skewed split
    samples_per_round: int = 1
    local_epochs: int = 4
    local_batch_size: int = 1
    lr: float = 0.2
    model_mode: str = "eval"  # the mode clients train in ("train": BatchNorm uses batch statistics)
    audit_clients: tuple[int, ...] = (0,)  # partition ids
    audit_every: int = 1
    attack: str = "ig"
    attack_options: Mapping[str, Any] = field(default_factory=dict)
    knows_training: bool = False
    igsa_samples: int = 8
    seed: int = 0
    device: str = "auto"  # where the server audits (the simulated clients train on the CPU)

    def __post_init__(self) -> None:
        for name in ("clients", "rounds", "samples_per_round", "local_epochs", "local_batch_size", "audit_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GradleakError(f"{name} must be an integer >= 1, got {value!r}")
        if self.partition not in PARTITIONS:
            raise GradleakError(f"partition must be one of {list(PARTITIONS)}, got {self.partition!r}")
        check_model_mode(self.model_mode)
        check_seed(self.seed)
        object.__setattr__(self, "device", check_device_spec(self.device))
        object.__setattr__(self, "audit_clients", tuple(int(c) for c in self.audit_clients))
        bad = [c for c in self.audit_clients if not 0 <= c < self.clients]
        if bad:
            raise GradleakError(f"audit_clients must be partition ids in [0, {self.clients - 1}], got {bad}")
        self.training()  # lr checked here

    def training(self) -> LocalTraining:
        return LocalTraining(protocol=Protocol.FEDAVG, lr=self.lr, epochs=self.local_epochs,
                             batch_size=self.local_batch_size, shuffle=True)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["audit_clients"] = list(self.audit_clients)
        return d


@dataclass(frozen=True)
class FederationResult:
    """Accuracy after each round (index 0: the initial model), every audit, the final
    global weights, and the wall-clock time."""

    config: FederationConfig
    accuracy: tuple[float, ...]
    audits: tuple[ClientAudit, ...]
    final_state: Mapping[str, torch.Tensor]
    seconds: float
    audited: bool


@dataclass(frozen=True)
class Federation:
    """The data and model a federation runs on, built once and shared by server and clients."""

    config: FederationConfig
    images: torch.Tensor  # train split, pixel space
    labels: torch.Tensor
    test: tuple[torch.Tensor, torch.Tensor]  # model space
    partitions: tuple[torch.Tensor, ...]
    normalization: Any
    model: torch.nn.Module
    input_shape: tuple[int, ...]

    def round_positions(self, partition: int, server_round: int) -> torch.Tensor:
        """Which of its samples client `partition` trains on in `server_round` (seeded)."""
        size = self.partitions[partition].numel()
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
            [self.config.seed, partition, server_round]).generate_state(1)[0]))
        return torch.randperm(size, generator=gen)[: min(self.config.samples_per_round, size)]

    def client_data(self, partition: int, server_round: int) -> ClientData:
        positions = self.round_positions(partition, server_round)
        share = self.partitions[partition]
        idx = share[positions]
        return ClientData(client=str(partition), images=self.images[idx], labels=self.labels[idx],
                          partition=self.images[share], positions=tuple(positions.tolist()))


def build_federation(config: FederationConfig) -> Federation:
    from gradleak.data import DataSource, load_case, split_dirichlet, split_iid

    case = load_case(DataSource(config.dataset), config.model, model_options=config.model_options, seed=config.seed)
    train, test = case.data, case.split("test")
    images, labels = train.batch(list(range(len(train))))
    test_images, test_labels = test.batch(list(range(len(test))))
    if config.partition == "iid":
        shares = split_iid(images.shape[0], config.clients, config.seed)
    else:
        shares = split_dirichlet(labels, config.clients, config.alpha, config.seed)
    model = case.model
    norm = train.normalization
    return Federation(config, images, labels, (norm.normalize(test_images), test_labels), tuple(shares), norm,
                      model, tuple(train.image_shape))


def client_app(fed: Federation):
    """A Flower ClientApp: local SGD on the round's draw, replying with the new weights."""
    from flwr.app import (
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp import ClientApp

    from gradleak.client import local_training

    app = ClientApp()
    keys = TrainingKeys(fallback=fed.config.training())

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        partition = int(context.node_config["partition-id"])
        config = msg.content["config"]
        server_round = int(config["server-round"])
        state = msg.content["arrays"].to_torch_state_dict()
        model = copy.deepcopy(fed.model)
        model.load_state_dict(state)
        model.train(fed.config.model_mode == "train")
        data = fed.client_data(partition, server_round)
        params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters() if p.requires_grad}
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        seed = int(np.random.SeedSequence([fed.config.seed, partition, server_round, 1]).generate_state(1)[0])
        final = local_training(model, params, buffers, fed.normalization.normalize(data.images), data.labels,
                               keys.read(config), seed=seed)
        new_state = dict(state) | {n: t.detach() for n, t in final.items()} | buffers
        return Message(content=RecordDict({
            "arrays": ArrayRecord(new_state),
            "metrics": MetricRecord({"num-examples": data.images.shape[0]}),
            CLIENT_RECORD: ConfigRecord({"partition-id": partition}),
        }), reply_to=msg)

    return app


def _partition_of(reply) -> int:
    record = reply.content.config_records.get(CLIENT_RECORD)
    return -1 if record is None else int(record["partition-id"])


def _ordered(strategy_class):
    """The strategy, aggregating the replies in client order. Flower hands them over in
    arrival order, and a floating-point sum of more than two updates then differs from run
    to run in its last bits: the next round's model, and every audit after it, would too."""

    class Ordered(strategy_class):
        def aggregate_train(self, server_round, replies):
            return super().aggregate_train(server_round, sorted(replies, key=_partition_of))

    Ordered.__name__ = f"Ordered{strategy_class.__name__}"
    return Ordered


def run_federation(config: FederationConfig, *, audit: bool = True,
                   on_audit: Callable[[ClientAudit], None] | None = None,
                   on_round: Callable[[int, float], None] | None = None) -> FederationResult:
    """Run the federation in Flower's simulation; audit it unless `audit` is False."""
    try:
        from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
        from flwr.serverapp import Grid, ServerApp
        from flwr.serverapp.strategy import FedAvg
    except ImportError:
        raise GradleakError(f"the Flower federation needs Flower: {INSTALL_HINT}") from None
    from gradleak.attacks import ATTACKS
    from gradleak.flower.strategy import LeakageAudit
    from gradleak.metrics import test_accuracy

    start = time.perf_counter()
    c = config
    attack = ATTACKS.create(c.attack, c.attack_options)  # a bad option fails before Ray starts
    resolve_device(c.device)  # likewise a device this machine lacks
    fed = build_federation(c)
    outcome: dict[str, Any] = {}

    def evaluate(server_round: int, arrays) -> MetricRecord:
        model = copy.deepcopy(fed.model)
        model.load_state_dict(arrays.to_torch_state_dict())
        acc = test_accuracy(model, *fed.test)
        if on_round is not None:
            on_round(server_round, acc)
        return MetricRecord({"accuracy": acc})

    def truth(server_round: int, reply) -> ClientData | None:
        record = reply.content.config_records.get(CLIENT_RECORD)
        return None if record is None else fed.client_data(int(record["partition-id"]), server_round)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = _ordered(FedAvg)(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=c.clients,
                                    min_available_nodes=c.clients)
        wrapped = strategy
        if audit:
            wrapped = LeakageAudit(
                strategy, fed.model, input_shape=fed.input_shape, attack=attack,
                schedule=AuditSchedule(every=c.audit_every, max_clients=len(c.audit_clients),
                                       clients={str(p) for p in c.audit_clients}),
                knows_training=c.knows_training, normalization=fed.normalization, truth=truth,
                test_data=fed.test, igsa_samples=c.igsa_samples, on_audit=on_audit, model_mode=c.model_mode,
                device=c.device,
                seed=c.seed)
        result = wrapped.start(grid=grid, initial_arrays=ArrayRecord(fed.model.state_dict()), num_rounds=c.rounds,
                               train_config=ConfigRecord({"lr": c.lr, "local-epochs": c.local_epochs,
                                                          "batch-size": c.local_batch_size}),
                               evaluate_fn=evaluate)
        outcome["result"] = result
        outcome["audits"] = tuple(wrapped.audits) if audit else ()

    history, final = simulate(server, client_app(fed), c.clients, c.rounds, outcome)
    return FederationResult(c, history, outcome["audits"], final, time.perf_counter() - start, audit)


def simulate(server_app, client_app, clients: int, rounds: int, outcome: dict) -> tuple[tuple[float, ...], dict]:
    """Run a Flower simulation whose server app stores its result in `outcome["result"]`;
    the accuracy after each round (round 0: the initial model) and the final weights."""
    from flwr.simulation import run_simulation

    # Flower logs every round at INFO and warns about its own deprecations; our progress is the caller's
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.ERROR)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a Ray FutureWarning on CPU
    try:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=clients,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"log_to_driver": False}})
    finally:
        flwr_logger.setLevel(level)
    if "result" not in outcome:
        raise GradleakError("the Flower simulation ended without a result (see the log above)")
    result = outcome["result"]
    history = tuple(float(result.evaluate_metrics_serverapp[r]["accuracy"]) for r in range(rounds + 1))
    return history, {k: v.clone() for k, v in result.arrays.to_torch_state_dict().items()}
