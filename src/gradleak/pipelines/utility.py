"""What a defense costs in accuracy: federated training with and without it.

`run_utility` trains the same model from the same start, on the same client shares and
seeds, once plainly and once with the defense chain (DP-SGD clients included, as the
`dpsgd` training defense), and reports the test accuracy of both (the SoK's
privacy-utility trade-off, Du et al., Fig. 11).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from gradleak.checks import check_mapping, check_seed
from gradleak.data import DataSource, load_case
from gradleak.defenses import build_defense
from gradleak.devices import check_device_spec, resolve_device
from gradleak.pipelines.federated import (
    FederatedTraining,
    TrainingResult,
    train_federated,
)


@dataclass(frozen=True)
class UtilityConfig:
    """Every setting of one utility run; defaults take seconds on 2 CPU cores."""

    dataset: str = "digits"
    data_root: str | None = None
    image_size: int | None = None
    model: str = "lenet"
    model_options: Mapping[str, Any] = field(default_factory=lambda: {"activation": "relu", "init": "default"})
    federated: FederatedTraining = FederatedTraining()
    defenses: tuple[str, ...] = ()  # specs, in order; a training defense (dpsgd, ats) first
    seed: int = 0
    device: str = "auto"  # where the clients and the server compute (auto, cpu, cuda, cuda:N, mps)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defenses", tuple(self.defenses))
        check_mapping("model_options", self.model_options)
        build_defense(self.defenses)  # a bad spec fails before any training
        check_seed(self.seed)
        object.__setattr__(self, "device", check_device_spec(self.device))


@dataclass(frozen=True)
class UtilityResult:
    baseline: TrainingResult
    defended: TrainingResult | None  # None when no defense was asked for

    @property
    def accuracy_drop(self) -> float | None:
        return None if self.defended is None else self.baseline.accuracy - self.defended.accuracy

    def to_json(self) -> dict:
        return {"baseline": self.baseline.to_json(),
                "defended": None if self.defended is None else self.defended.to_json(),
                "accuracy_drop": self.accuracy_drop}


def run_utility(config: UtilityConfig) -> UtilityResult:
    """Train with and without the defense; the defended run is skipped when there is none."""
    device = resolve_device(config.device)
    case = load_case(DataSource(config.dataset, config.data_root, image_size=config.image_size), config.model,
                     model_options=config.model_options, seed=config.seed, device=device)
    norm = case.normalization
    test = case.split("test")
    xs, ys = case.data.batch(list(range(len(case.data))))
    xt, yt = test.batch(list(range(len(test))))
    data = ((norm.normalize(xs).to(device), ys.to(device)), (norm.normalize(xt).to(device), yt.to(device)))
    baseline = train_federated(case.model, *data, config.federated)
    defended = None
    if config.defenses:
        defended = train_federated(case.model, *data, config.federated, defense=build_defense(config.defenses))
    return UtilityResult(baseline, defended)


__all__ = ["UtilityConfig", "UtilityResult", "run_utility"]
