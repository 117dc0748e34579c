"""Typed records of a Flower audit: what the auditor knows about a client, and what one
audited update leaked. Plain torch and dataclasses: importing this needs no Flower."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Collection

import torch

from gradleak.errors import GradleakError
from gradleak.metrics.identify import Identification
from gradleak.records import ImageMetrics, LeakVerdict, LocalTraining, Protocol

INSTALL_HINT = "pip install 'gradleak[flower]' (flwr[simulation]==1.41.*)"


@dataclass(frozen=True)
class TrainingKeys:
    """Where the local configuration lives in the ConfigRecord the server sends.

    Flower leaves the keys to the app; these are the names its examples use. A key the
    config lacks takes `fallback`'s value (what the client does unasked).
    """

    lr: str = "lr"
    epochs: str = "local-epochs"
    batch_size: str = "batch-size"
    fallback: LocalTraining = LocalTraining(protocol=Protocol.FEDAVG, lr=0.01)

    def read(self, config: Any) -> LocalTraining:
        """The client's `LocalTraining` from the config it was sent (FedAvg: a weight delta)."""
        get = config.get if hasattr(config, "get") else dict(config).get
        lr = get(self.lr, self.fallback.lr)
        epochs = get(self.epochs, self.fallback.epochs)
        batch = get(self.batch_size, self.fallback.batch_size)
        for key, value, kinds in ((self.lr, lr, (int, float)), (self.epochs, epochs, (int,)),
                                  (self.batch_size, batch, (int, type(None)))):
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise GradleakError(f"the sent config's {key!r} must be a number, got {value!r}")
        return LocalTraining(protocol=Protocol.FEDAVG, lr=float(lr), epochs=epochs, batch_size=batch,
                             shuffle=self.fallback.shuffle, loss=self.fallback.loss)


@dataclass(frozen=True)
class AuditSchedule:
    """Which updates to attack: every `every`-th round (1, 1 + every, ...), at most
    `max_clients` per round, only from `nodes` (Flower node ids) when given, else from
    clients whose `ClientData.client` is in `clients` when given, else any."""

    every: int = 1
    max_clients: int | None = 1
    nodes: Collection[int] | None = None
    clients: Collection[str] | None = None  # stable client identities (see `LeakageAudit`'s client_key)

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise GradleakError(f"every must be an integer >= 1, got {self.every!r}")
        if self.max_clients is not None and (isinstance(self.max_clients, bool)
                                             or not isinstance(self.max_clients, int) or self.max_clients < 1):
            raise GradleakError(f"max_clients must be None or an integer >= 1, got {self.max_clients!r}")
        for name in ("nodes", "clients"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, frozenset(value))

    def due(self, server_round: int) -> bool:
        return (server_round - 1) % self.every == 0


@dataclass(frozen=True)
class ClientData:
    """What an auditor running a simulation knows about one client in one round.

    `images` (pixel space, [0, 1]) and `labels` are the samples behind this round's
    update; `partition` is all the client's images (the candidates a reconstruction is
    identified among) and `positions[i]` the index of `images[i]` in it. A curious server
    has none of this: it is the ground truth an audit scores against.
    """

    client: str
    images: torch.Tensor
    labels: torch.Tensor
    partition: torch.Tensor
    positions: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.partition.dim() != 4 or self.images.shape[1:] != self.partition.shape[1:]:
            raise GradleakError(f"images and partition must be (N, C, H, W) of one image shape, got "
                                f"{tuple(self.images.shape)} and {tuple(self.partition.shape)}")
        if self.labels.shape != (self.images.shape[0],) or len(self.positions) != self.images.shape[0]:
            raise GradleakError(f"labels and positions must hold one entry per image ({self.images.shape[0]}), "
                                f"got {tuple(self.labels.shape)} and {len(self.positions)}")
        object.__setattr__(self, "positions", tuple(int(p) for p in self.positions))


@dataclass(frozen=True)
class ClientAudit:
    """One audited update: who, when, what the attacker assumed, and what leaked.

    `accuracy` is the test accuracy of the global model the client started the round
    from (the model the attacker holds); `metrics`, `identification` and `igsa` need the
    client's data and are None without it.
    """

    server_round: int
    node_id: int
    client: str | None
    num_samples: int
    training: LocalTraining
    knows_training: bool
    attack: str
    status: str
    update_norm: float
    attack_seconds: float
    audit_seconds: float
    metrics: ImageMetrics | None = None
    identification: tuple[Identification, ...] = ()  # one per neighbour metric (psnr, ssim, ...)
    igsa: float | None = None
    accuracy: float | None = None
    reconstruction: torch.Tensor | None = None  # pixel space, matched to the originals when known
    original: torch.Tensor | None = None  # the client's true images (pixel space), when known and kept

    @property
    def psnr(self) -> float | None:
        return None if self.metrics is None else self.metrics.psnr_mean

    @property
    def verdict(self) -> LeakVerdict | None:
        """Leaked / partly / not leaked (needs the truth: None without it)."""
        return None if self.metrics is None else self.metrics.verdict

    def to_json(self) -> dict[str, Any]:
        def num(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else round(float(v), 6)

        t = self.training
        return {
            "server_round": self.server_round,
            "verdict": None if self.verdict is None else self.verdict.to_json(),
            "node_id": self.node_id, "client": self.client,
            "num_samples": self.num_samples,
            "training": {"lr": t.lr, "epochs": t.epochs, "batch_size": t.batch_size,
                         "local_steps": t.steps(self.num_samples)},
            "knows_training": self.knows_training, "attack": self.attack, "status": self.status,
            "update_norm": num(self.update_norm), "accuracy": num(self.accuracy), "igsa": num(self.igsa),
            "metrics": None if self.metrics is None else {
                **{k: num(v) for k, v in self.metrics.means().items()},
                "per_sample": {"psnr": [num(v) for v in self.metrics.psnr], "ssim": [num(v) for v in self.metrics.ssim]},
            },
            "identification": {i.metric: i.to_json() for i in self.identification},
            "timings": {"attack_s": round(self.attack_seconds, 3), "audit_s": round(self.audit_seconds, 3)},
        }
