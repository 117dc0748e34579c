"""What a client shares: its training configuration and the update it computes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import torch

from gradleak.checks import check_choice, check_positive_int
from gradleak.errors import GradleakError

# the client's training losses (`gradleak.client.losses` computes them)
LOSSES = ("cross-entropy", "logistic")
MODEL_MODES = ("eval", "train")


def check_loss(name: object) -> str:
    return str(check_choice("loss", name, LOSSES))


def check_model_mode(mode: object, name: str = "model_mode") -> str:
    return str(check_choice(name, mode, MODEL_MODES))


class Protocol(str, Enum):
    """What the client shares: one gradient (FedSGD) or a weight delta (FedAvg)."""

    FEDSGD = "fedsgd"
    FEDAVG = "fedavg"


def _protocol(value: object) -> Protocol:
    return Protocol(check_choice("protocol", value, [p.value for p in Protocol] + list(Protocol)))


@dataclass(frozen=True)
class LocalTraining:
    """The client's local training configuration.

    FedSGD: one gradient of the mean loss over all `num_samples` samples. FedAvg:
    `epochs` passes over the samples in mini-batches of `batch_size` (None means full
    batch) with plain SGD at `lr`; the shared update is the weight delta. `loss` is
    "cross-entropy" or "logistic" (one logit, R-GAP's setting; `gradleak.client.losses`).
    """

    protocol: Protocol = Protocol.FEDSGD
    lr: float = 0.1
    epochs: int = 1
    batch_size: int | None = None
    shuffle: bool = False
    loss: str = "cross-entropy"

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", _protocol(self.protocol))
        check_loss(self.loss)
        if not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and self.lr > 0
                and math.isfinite(self.lr)):
            raise GradleakError(f"lr must be a positive finite number, got {self.lr!r}")
        check_positive_int("epochs", self.epochs)
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise GradleakError(f"batch_size must be None or an integer >= 1, got {self.batch_size!r}")

    def steps(self, num_samples: int) -> int:
        """Number of local SGD steps over `num_samples` samples (1 for FedSGD)."""
        if self.protocol is Protocol.FEDSGD:
            return 1
        b = num_samples if self.batch_size is None else min(self.batch_size, num_samples)
        return self.epochs * math.ceil(num_samples / b)


@dataclass(frozen=True)
class PrivacySpent:
    """The (epsilon, delta) a DP-SGD client spent in one round of `steps` steps."""

    epsilon: float
    delta: float
    steps: int
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    accountant: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["epsilon"] = self.epsilon if math.isfinite(self.epsilon) else "inf"  # JSON has no inf
        return out


@dataclass(frozen=True)
class ClientUpdate:
    """What the server observes from one client.

    `tensors` are in the model's `parameters()` order, named by `names`. For FedSGD they
    are the gradient of the mean loss; for FedAvg the delta `w_after - w_before`.
    `bn_statistics` holds per-BN-layer (mean, var) of the client's batch when the client
    shares them (assumption level 4), else is empty. `bn_running` holds per-BN-layer running
    (mean, var) after local training, what a FedAvg client in train mode that sends its whole
    state shares with its weights (empty otherwise). `defenses` names the transforms the
    client applied before sharing (`gradleak.defenses`), in order; `privacy` is what a
    DP-SGD client spent producing it (None for any other client).
    """

    protocol: Protocol
    names: tuple[str, ...]
    tensors: tuple[torch.Tensor, ...]
    num_samples: int
    training: LocalTraining
    local_steps: int
    model_mode: str = "eval"
    bn_statistics: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    bn_running: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    defenses: tuple[str, ...] = ()  # specs of the defenses applied, in order ("qsgd:bits=4", ...)
    privacy: PrivacySpent | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", _protocol(self.protocol))
        if len(self.names) != len(self.tensors):
            raise GradleakError(
                f"ClientUpdate names and tensors differ in length: {len(self.names)} vs {len(self.tensors)}"
            )
        if self.num_samples < 1:
            raise GradleakError(f"num_samples must be >= 1, got {self.num_samples}")
        check_model_mode(self.model_mode)

    def as_mapping(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.tensors))

    def norm(self) -> float:
        return float(torch.sqrt(sum((t.double() ** 2).sum() for t in self.tensors)))
