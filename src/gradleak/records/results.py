"""What comes out: an attack's reconstruction, its metrics, and one audit's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from gradleak.errors import GradleakError
from gradleak.records.client import PrivacySpent
from gradleak.records.knowledge import Assumption, LabelKnowledge
from gradleak.records.verdict import LeakVerdict


@dataclass(frozen=True)
class SampleCertificate:
    """An exact attack's check of one recovered sample (SPEAR): with its label, the sample
    reproduces its own column of the layer's output gradient to `residual` (relative, after
    one scale common to the batch), and its forward pass switches off no unit where that
    column is nonzero (`pattern_mismatches` units do). `certified` when residual <= `tolerance`
    and no unit disagrees."""

    residual: float
    pattern_mismatches: int
    tolerance: float
    certified: bool


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
    has no single-sample gradient to compare with). The status says how the attack ran,
    not whether anything leaked: that is the verdict of its metrics (`ImageMetrics.verdict`).

    `gradient_mismatch` is the relative L2 distance between the update the reconstruction
    (with its labels) would produce and the observed one, in the units the attacker
    compared (after the best scale when it read a FedAvg delta as one step of an assumed
    learning rate); every attack reports it. `notes` say how the attack had to run
    (attention on the math kernel, ...).
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
    gradient_mismatch: float | None = None
    notes: tuple[str, ...] = ()
    certificates: tuple[SampleCertificate, ...] = ()  # exact attacks: one per recovered sample (SPEAR)


@dataclass(frozen=True)
class ImageMetrics:
    """Metrics of a matched reconstruction, in [0, 1] pixel space.

    `values` maps each computed metric (a name of `gradleak.metrics.METRICS`) to one
    value per original, in the order of the original batch; `assignment[i]` is the index
    of the reconstruction matched to original `i`, by the metric named in `matching`.
    `baseline_psnr` is the PSNR of a flat image of each original's mean colour, the floor
    the verdict measures a reconstruction against.
    """

    values: Mapping[str, tuple[float, ...]]
    assignment: tuple[int, ...]
    label_accuracy: float | None = None
    matching: str = "mse"
    baseline_psnr: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", {k: tuple(float(x) for x in v) for k, v in self.values.items()})
        object.__setattr__(self, "baseline_psnr", tuple(float(x) for x in self.baseline_psnr))
        sizes = {k: len(v) for k, v in self.values.items()}
        if any(n != len(self.assignment) for n in sizes.values()):
            raise GradleakError(f"ImageMetrics needs one value per original ({len(self.assignment)}), got {sizes}")

    def per_sample(self, metric: str) -> tuple[float, ...]:
        if metric not in self.values:
            raise GradleakError(f"metric {metric!r} was not computed; computed: {', '.join(self.values)}")
        return self.values[metric]

    def mean(self, metric: str) -> float:
        v = self.per_sample(metric)
        return float(sum(v) / len(v))

    @property
    def psnr(self) -> tuple[float, ...]:
        return self.per_sample("psnr")

    @property
    def ssim(self) -> tuple[float, ...]:
        return self.per_sample("ssim")

    @property
    def mse(self) -> tuple[float, ...]:
        return self.per_sample("mse")

    @property
    def psnr_mean(self) -> float:
        return self.mean("psnr")

    @property
    def psnr_max(self) -> float:
        return float(max(self.psnr))

    @property
    def ssim_mean(self) -> float:
        return self.mean("ssim")

    @property
    def mse_mean(self) -> float:
        return self.mean("mse")

    @property
    def verdict(self) -> LeakVerdict:
        """Leaked / partly / not leaked, per sample and overall, at the default thresholds."""
        if "psnr" not in self.values or len(self.baseline_psnr) != len(self.assignment):
            raise GradleakError("a verdict needs the PSNR and the flat-colour baseline of every sample")
        return LeakVerdict.of(self.values, self.baseline_psnr)

    def means(self) -> dict[str, float]:
        """Every metric's mean over the batch, the best PSNR, and the label accuracy."""
        out = {name: self.mean(name) for name in self.values}
        if "psnr" in self.values:
            out["psnr_max"] = self.psnr_max
        if self.baseline_psnr:
            out["baseline_psnr"] = sum(self.baseline_psnr) / len(self.baseline_psnr)
        if self.label_accuracy is not None:
            out["label_accuracy"] = self.label_accuracy
        return out


@dataclass(frozen=True)
class ServerOutcome:
    """What a (malicious) server did in an audit and what it got: its spec, its threat
    level, the expected recovered fraction before the attack (None: no closed form) and
    P(all recovered), and the measured fractions of the batch at PSNR >= 40 and >= 18 dB
    (after Hungarian matching)."""

    spec: str
    assumption: Assumption
    expected_fraction: float | None
    p_all: float | None
    recovered_40: float
    recovered_18: float

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "assumption_level": int(self.assumption), "expected_fraction": self.expected_fraction,
                "p_all": self.p_all, "recovered_40": self.recovered_40, "recovered_18": self.recovered_18}


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
    privacy: PrivacySpent | None = None  # a DP-SGD client's (epsilon, delta) spent
    gradient_mismatch: float | None = None
    notes: tuple[str, ...] = ()
    server: ServerOutcome | None = None  # set when the audit's server was not the default honest one

    @property
    def verdict(self) -> LeakVerdict:
        return self.metrics.verdict

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.to_json(),
            "metrics": self.metrics.means(),
            "per_sample": {**{k: list(v) for k, v in self.metrics.values.items()},
                           "assignment": list(self.metrics.assignment)},
            "status": self.status,
            "gradient_mismatch": self.gradient_mismatch,
            "notes": list(self.notes),
            "knowledge": {
                "assumption_levels": [int(a) for a in self.assumptions],
                "assumption_names": [a.name.lower() for a in self.assumptions],
                "labels": self.label_knowledge.value,
            },
            "model_mode": self.model_mode,
            "defenses": list(self.defenses),
            "privacy": None if self.privacy is None else self.privacy.to_json(),
            "restart_losses": list(self.restart_losses),
            "restart_statuses": list(self.restart_statuses),
            "restart_mode": self.restart_mode,
            "units": [list(u) for u in self.units],
            "peak_memory_bytes": self.peak_memory_bytes,
            "timings": dict(self.timings),
            "settings": dict(self.settings),
            "seed": self.seed,
            "versions": dict(self.versions),
            "server": None if self.server is None else self.server.to_json(),
        }
