"""Typed, frozen records that cross every boundary of the pipeline.

A client produces a `ClientUpdate`; an attack receives it with an `AttackerKnowledge`
and returns a `Reconstruction`; the audit compares it with the truth and writes an
`AuditResult`. Tensors inside records are never mutated after construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Mapping

import torch

from gradleak.errors import GradleakError


class Protocol(str, Enum):
    """What the client shares: one gradient (FedSGD) or a weight delta (FedAvg)."""

    FEDSGD = "fedsgd"
    FEDAVG = "fedavg"


class Assumption(IntEnum):
    """Threat-model assumption levels of the SoK (Du et al., Sec. 2.2, Tab. 7).

    0 basic information (gradient, model, data shape, number of samples) and
    1 priors (e.g. total variation) are practical; 2 data distribution,
    3 client-side training details, 4 BN statistics are strong; 5 is a malicious server.
    """

    BASIC = 0
    PRIORS = 1
    DATA_DISTRIBUTION = 2
    TRAINING_DETAILS = 3
    BN_STATISTICS = 4
    MALICIOUS = 5


class LabelKnowledge(str, Enum):
    """Where the attacker's labels come from."""

    UNKNOWN = "unknown"  # optimized jointly with the data (DLG)
    INFERRED = "inferred"  # recovered from the update itself (iDLG rule, batch rules)
    GIVEN = "given"  # handed to the attacker: an extra assumption beyond level 0


@dataclass(frozen=True)
class LocalTraining:
    """The client's local training configuration.

    FedSGD: one gradient of the mean loss over all `num_samples` samples. FedAvg:
    `epochs` passes over the samples in mini-batches of `batch_size` (None means full
    batch) with plain SGD at `lr`; the shared update is the weight delta. `loss` is
    "cross-entropy" or "logistic" (one logit, R-GAP's setting; `gradleak.fl.losses`).
    """

    protocol: Protocol = Protocol.FEDSGD
    lr: float = 0.1
    epochs: int = 1
    batch_size: int | None = None
    shuffle: bool = False
    loss: str = "cross-entropy"

    def __post_init__(self) -> None:
        from gradleak.fl.losses import check_loss

        object.__setattr__(self, "protocol", Protocol(self.protocol))
        check_loss(self.loss)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise GradleakError(f"lr must be a positive finite number, got {self.lr!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise GradleakError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise GradleakError(f"batch_size must be None or an integer >= 1, got {self.batch_size!r}")

    def steps(self, num_samples: int) -> int:
        """Number of local SGD steps over `num_samples` samples (1 for FedSGD)."""
        if self.protocol is Protocol.FEDSGD:
            return 1
        b = num_samples if self.batch_size is None else min(self.batch_size, num_samples)
        return self.epochs * math.ceil(num_samples / b)


@dataclass(frozen=True)
class ClientUpdate:
    """What the server observes from one client.

    `tensors` are in the model's `parameters()` order, named by `names`. For FedSGD they
    are the gradient of the mean loss; for FedAvg the delta `w_after - w_before`.
    `bn_statistics` holds per-BN-layer (mean, var) of the client's batch when the client
    shares them (assumption level 4), else is empty. `defenses` names the transforms the
    client applied before sharing (`gradleak.defenses`), in order.
    """

    protocol: Protocol
    names: tuple[str, ...]
    tensors: tuple[torch.Tensor, ...]
    num_samples: int
    training: LocalTraining
    local_steps: int
    model_mode: str = "eval"
    bn_statistics: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    defenses: tuple[str, ...] = ()  # specs of the defenses applied, in order ("qsgd:bits=4", ...)

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", Protocol(self.protocol))
        if len(self.names) != len(self.tensors):
            raise GradleakError(
                f"ClientUpdate names and tensors differ in length: {len(self.names)} vs {len(self.tensors)}"
            )
        if self.num_samples < 1:
            raise GradleakError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.model_mode not in ("train", "eval"):
            raise GradleakError(f"model_mode must be 'train' or 'eval', got {self.model_mode!r}")

    def as_mapping(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.tensors))

    def norm(self) -> float:
        return float(torch.sqrt(sum((t.double() ** 2).sum() for t in self.tensors)))


@dataclass(frozen=True)
class AttackerKnowledge:
    """What the attacker (the server) knows beyond the update and the model.

    Always known (level 0): the model and its weights at the start of the round, the
    input shape and the number of samples. `labels` are given only when
    `label_knowledge` is GIVEN. `knows_training` grants the client's local
    configuration (level 3); `uses_bn_statistics` the shared BN statistics (level 4; no
    attack uses them yet, so attacks refuse it rather than claim a level they do not use).
    `bounds` are per-channel (low, high) of valid inputs in model space (pixels 0 and 1
    after normalization); attacks that clamp use them. `defense` is the client's defense
    when the attacker knows the mechanism (the Bayes attack models it, Balunovic et al.
    2022); `defense_seed` additionally reveals its random masks (not its noise).
    """

    num_samples: int
    input_shape: tuple[int, ...]
    num_classes: int
    label_knowledge: LabelKnowledge = LabelKnowledge.UNKNOWN
    labels: torch.Tensor | None = None
    knows_training: bool = False
    training: LocalTraining | None = None
    uses_bn_statistics: bool = False
    bounds: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    defense: Any = None  # the client's `gradleak.defenses.Defense`, when the attacker knows it
    defense_seed: int | None = None  # its seed, when the attacker knows its random masks

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_knowledge", LabelKnowledge(self.label_knowledge))
        if self.defense is not None:
            from gradleak.defenses import Defense

            if not isinstance(self.defense, Defense):
                raise GradleakError(f"defense must be a gradleak Defense or None, got {type(self.defense).__name__}")
        if self.defense_seed is not None and (isinstance(self.defense_seed, bool)
                                              or not isinstance(self.defense_seed, int) or self.defense_seed < 0):
            raise GradleakError(f"defense_seed must be None or an integer >= 0, got {self.defense_seed!r}")
        if self.defense_seed is not None and self.defense is None:
            raise GradleakError("defense_seed is given but defense is not: the seed only means something with it")
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        if self.label_knowledge is LabelKnowledge.GIVEN:
            if self.labels is None or self.labels.numel() != self.num_samples:
                got = None if self.labels is None else tuple(self.labels.shape)
                raise GradleakError(
                    f"labels must hold {self.num_samples} class indices when given, got {got}"
                )
        if self.labels is not None and self.labels.numel() and not (
            0 <= int(self.labels.min()) and int(self.labels.max()) < self.num_classes
        ):
            raise GradleakError(
                f"labels must be class indices in [0, {self.num_classes - 1}], got {self.labels.tolist()}"
            )
        if self.knows_training and self.training is None:
            raise GradleakError("knows_training=True needs the client's LocalTraining in `training`")

    def assumptions(self) -> tuple[Assumption, ...]:
        levels = {Assumption.BASIC}
        if self.knows_training:
            levels.add(Assumption.TRAINING_DETAILS)
        if self.uses_bn_statistics:
            levels.add(Assumption.BN_STATISTICS)
        return tuple(sorted(levels))


@dataclass(frozen=True)
class Reconstruction:
    """An attack's output in the model's input space (normalized, as the model sees it).

    `restart_losses` holds each restart's best objective and `restart_statuses` how it
    ended ("converged", "plateau", ...); `best_restart` indexes them.
    `status` is "ok", "budget" (wall-clock budget hit), "stopped" (callback asked) or
    "nonfinite" (the loss became NaN/inf; the best finite iterate is returned).
    Restart statuses add "plateau" (stalled), "halved" (dropped by successive halving)
    and "superseded" (another restart converged first). Analytic attacks report
    "partial" when they found fewer samples than asked, and R-GAP's batch treatment
    "combination" (one combined input, copied for every sample). For analytic attacks
    `restart_losses` holds the relative gradient mismatch of the result (empty when it
    has no single-sample gradient to compare with).
    """

    data: torch.Tensor
    labels: torch.Tensor | None
    restart_losses: tuple[float, ...]
    best_restart: int
    iterations: int
    seconds: float
    status: str = "ok"
    assumptions: tuple[Assumption, ...] = (Assumption.BASIC,)
    label_knowledge: LabelKnowledge = LabelKnowledge.UNKNOWN
    loss_history: tuple[float, ...] = ()
    restart_statuses: tuple[str, ...] = ()
    peak_memory_bytes: int | None = None  # the process's peak resident memory during the attack
    restart_mode: str = "sequential"  # how the restarts ran: stacked, interleaved, sequential; or "analytic"
    units: tuple[tuple[int, ...], ...] = ()  # analytic attacks: the layer units each sample was read from


@dataclass(frozen=True)
class ImageMetrics:
    """Metrics of a matched reconstruction, in [0, 1] pixel space.

    Per-sample lists are in the order of the original batch; `assignment[i]` is the
    index of the reconstruction matched to original `i`.
    """

    mse: tuple[float, ...]
    psnr: tuple[float, ...]
    ssim: tuple[float, ...]
    assignment: tuple[int, ...]
    label_accuracy: float | None = None

    @property
    def psnr_mean(self) -> float:
        return float(sum(self.psnr) / len(self.psnr))

    @property
    def psnr_max(self) -> float:
        return float(max(self.psnr))

    @property
    def ssim_mean(self) -> float:
        return float(sum(self.ssim) / len(self.ssim))

    @property
    def mse_mean(self) -> float:
        return float(sum(self.mse) / len(self.mse))

    def summary(self) -> dict[str, float]:
        out = {
            "psnr": self.psnr_mean,
            "psnr_max": self.psnr_max,
            "ssim": self.ssim_mean,
            "mse": self.mse_mean,
        }
        if self.label_accuracy is not None:
            out["label_accuracy"] = self.label_accuracy
        return out


@dataclass(frozen=True)
class AuditResult:
    """One audited attack: settings, knowledge, metrics, timings, versions and seed."""

    settings: Mapping[str, Any]
    assumptions: tuple[Assumption, ...]
    label_knowledge: LabelKnowledge
    metrics: ImageMetrics
    timings: Mapping[str, float]
    status: str
    seed: int
    versions: Mapping[str, str] = field(default_factory=dict)
    restart_losses: tuple[float, ...] = ()
    restart_statuses: tuple[str, ...] = ()
    model_mode: str = "eval"
    peak_memory_bytes: int | None = None
    restart_mode: str = "sequential"
    units: tuple[tuple[int, ...], ...] = ()
    defenses: tuple[str, ...] = ()  # what the client applied to its update, in order
    privacy: Mapping[str, Any] | None = None  # a DP-SGD client's (epsilon, delta) spent

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics.summary(),
            "per_sample": {
                "psnr": list(self.metrics.psnr),
                "ssim": list(self.metrics.ssim),
                "mse": list(self.metrics.mse),
                "assignment": list(self.metrics.assignment),
            },
            "status": self.status,
            "knowledge": {
                "assumption_levels": [int(a) for a in self.assumptions],
                "assumption_names": [a.name.lower() for a in self.assumptions],
                "labels": self.label_knowledge.value,
            },
            "model_mode": self.model_mode,
            "defenses": list(self.defenses),
            "privacy": None if self.privacy is None else dict(self.privacy),
            "restart_losses": list(self.restart_losses),
            "restart_statuses": list(self.restart_statuses),
            "restart_mode": self.restart_mode,
            "units": [list(u) for u in self.units],
            "peak_memory_bytes": self.peak_memory_bytes,
            "timings": dict(self.timings),
            "settings": dict(self.settings),
            "seed": self.seed,
            "versions": dict(self.versions),
        }
