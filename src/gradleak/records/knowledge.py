"""What the attacker knows: the SoK's assumption levels and the attacker's knowledge."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

import torch

from gradleak.checks import check_optional_seed
from gradleak.errors import GradleakError
from gradleak.records.client import LocalTraining


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
    `server` is the spec of the server behaviour that built the model the client trained
    (`gradleak.server`); a malicious one adds level 5.
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
    server: str | None = None  # the malicious server's spec, when the attacker built the model (level 5)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_knowledge", LabelKnowledge(self.label_knowledge))
        # records sit below the defenses: a Defense is recognized by its verbs
        if self.defense is not None and not all(callable(getattr(self.defense, verb, None))
                                                for verb in ("transform", "conditional", "spec")):
            raise GradleakError(f"defense must be a gradleak Defense or None, got {type(self.defense).__name__}")
        check_optional_seed(self.defense_seed, "defense_seed")
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
        if self.server is not None and self.server.partition(":")[0] != "honest":
            levels.add(Assumption.MALICIOUS)
        return tuple(sorted(levels))
