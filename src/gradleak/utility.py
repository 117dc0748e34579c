"""What a defense costs in accuracy: federated training with and without it.

`run_utility` trains the same model from the same start, on the same client shares and
seeds, once plainly and once with the defense (and/or DP-SGD clients), and reports the
test accuracy of both (the SoK's privacy-utility trade-off, Du et al., Fig. 11).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from gradleak.errors import GradleakError
from gradleak.fl.federated import FederatedConfig, TrainingResult, train_federated


@dataclass(frozen=True)
class UtilityConfig:
    """Every setting of one utility run; defaults take seconds on 2 CPU cores."""

    dataset: str = "digits"
    data_root: str | None = None
    image_size: int | None = None
    model: str = "lenet"
    model_options: Mapping[str, Any] = field(default_factory=lambda: {"activation": "relu", "init": "default"})
    federated: FederatedConfig = FederatedConfig()
    defenses: tuple[str, ...] = ()
    dp_noise_multiplier: float | None = None
    dp_max_grad_norm: float = 1.0
    dp_delta: float = 1e-5
    seed: int = 0

    def __post_init__(self) -> None:
        from gradleak.defenses import build_defense

        object.__setattr__(self, "defenses", tuple(self.defenses))
        build_defense(self.defenses)
        self.dp()
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise GradleakError(f"seed must be an integer >= 0, got {self.seed!r}")

    def dp(self):
        from gradleak.fl.dpsgd import dp_settings

        return dp_settings(self.dp_noise_multiplier, self.dp_max_grad_norm, self.dp_delta)


@dataclass(frozen=True)
class UtilityReport:
    baseline: TrainingResult
    defended: TrainingResult | None  # None when no defense was asked for

    @property
    def accuracy_drop(self) -> float | None:
        return None if self.defended is None else self.baseline.accuracy - self.defended.accuracy

    def to_json(self) -> dict:
        return {"baseline": self.baseline.to_json(),
                "defended": None if self.defended is None else self.defended.to_json(),
                "accuracy_drop": self.accuracy_drop}


def run_utility(config: UtilityConfig) -> UtilityReport:
    """Train with and without the defense; the defended run is skipped when there is none."""
    from gradleak.data import load_dataset
    from gradleak.defenses import build_defense
    from gradleak.models import build_model

    train = load_dataset(config.dataset, config.data_root, split="train", image_size=config.image_size)
    test = load_dataset(config.dataset, config.data_root, split="test", image_size=config.image_size)
    norm = train.normalization
    xs, ys = train.batch(list(range(len(train))))
    xt, yt = test.batch(list(range(len(test))))
    model = build_model(config.model, num_classes=train.num_classes, input_shape=train.image_shape,
                        seed=config.seed, **dict(config.model_options))
    data = ((norm.normalize(xs), ys), (norm.normalize(xt), yt))
    baseline = train_federated(model, *data, config.federated)
    defended = None
    if config.defenses or config.dp() is not None:
        defended = train_federated(model, *data, config.federated, defense=build_defense(config.defenses),
                                   dp=config.dp())
    return UtilityReport(baseline, defended)
