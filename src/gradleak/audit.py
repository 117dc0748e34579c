"""The audit pipeline, end to end, as one readable function.

data -> model -> client update -> attack -> metrics. `AuditConfig` holds every
setting (the CLI and YAML files only fill it); `run_audit` returns the typed
`AuditResult` plus the images needed for reports.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from gradleak.api import make_attack, output_classes
from gradleak.attacks import ATTACKS, ProgressCallback
from gradleak.defenses import ClientBatch
from gradleak.errors import GradleakError
from gradleak.fl.client import simulate_any_client
from gradleak.records import AttackerKnowledge, AuditResult, LabelKnowledge, LocalTraining, Protocol, Reconstruction


@dataclass(frozen=True)
class AuditConfig:
    """Every setting of one audit. Defaults are the day-one demo (about a minute on 2 CPU cores)."""

    dataset: str = "photos"
    data_root: str | None = None
    download: bool = False
    split: str = "train"
    indices: tuple[int, ...] | None = None  # None: image 0 for one sample, else a seeded draw
    batch_size: int = 1
    image_size: int | None = None
    model: str = "lenet"
    model_options: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    protocol: str = "fedsgd"
    lr: float = 0.1
    epochs: int = 1
    local_batch_size: int | None = None
    mode: str = "eval"
    attack: str = "idlg"
    attack_options: Mapping[str, Any] = field(default_factory=dict)  # the attack's own defaults otherwise
    labels: str = "auto"  # "auto": as the attack does (optimize or infer); "given": hand the true labels over
    knows_training: bool = False
    defenses: tuple[str, ...] = ()  # defense specs applied to the update in order ("qsgd:bits=4", ...)
    knows_defense: bool = False  # the attacker knows the defense mechanism (the Bayes attack models it)
    knows_mask: bool = False  # ... and its random masks (its seed)
    dp_noise_multiplier: float | None = None  # DP-SGD client (Opacus) when set
    dp_max_grad_norm: float = 1.0
    dp_delta: float = 1e-5
    seed: int = 0  # the model's initialization, the data draw, the client's and defense's randomness
    attack_seed: int | None = None  # the attack's random start; None: `seed` (SoK's "attack initializations")

    def __post_init__(self) -> None:
        for name in ("seed", "attack_seed"):
            value = getattr(self, name)
            if name == "attack_seed" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise GradleakError(f"{name} must be an integer >= 0, got {value!r}")
        if self.labels not in ("auto", "given"):
            raise GradleakError(f"labels must be 'auto' or 'given', got {self.labels!r}")
        if self.mode not in ("train", "eval"):
            raise GradleakError(f"mode must be 'train' or 'eval', got {self.mode!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise GradleakError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.indices is not None and len(self.indices) != self.batch_size and self.batch_size != 1:
            raise GradleakError(
                f"indices name {len(self.indices)} images but batch_size is {self.batch_size}; give one or the other"
            )
        if self.protocol not in {p.value for p in Protocol}:
            raise GradleakError(f"protocol must be one of {[p.value for p in Protocol]}, got {self.protocol!r}")
        ATTACKS.entry(self.attack)
        object.__setattr__(self, "defenses", tuple(self.defenses))
        self.defense()  # parse the specs now: a typo fails before any work
        self.dp()
        if self.knows_mask and not self.knows_defense:
            raise GradleakError("knows_mask needs knows_defense: the masks belong to a known defense")
        if self.knows_defense and not self.defenses:
            raise GradleakError("knows_defense is set but no defense is applied; add defenses")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "AuditConfig":
        """A config from plain settings (YAML, flags, a stored cell): lists become tuples,
        one defense spec or one index becomes a sequence, and `batch_size` defaults to the
        number of indices."""
        s = dict(settings)
        if isinstance(s.get("defenses"), str):
            s["defenses"] = (s["defenses"],)
        if isinstance(s.get("indices"), int) and not isinstance(s.get("indices"), bool):
            s["indices"] = (s["indices"],)
        for key in ("indices", "defenses"):
            if isinstance(s.get(key), list):
                s[key] = tuple(s[key])
        indices = s.get("indices")
        if indices is not None:
            if not isinstance(indices, tuple) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                         for i in indices):
                raise GradleakError(f"indices must be a list of image indices, got {indices!r}")
            s.setdefault("batch_size", len(indices))
        try:
            return cls(**s)
        except TypeError as exc:
            raise GradleakError(f"invalid setting: {exc}") from None

    def defense(self):
        from gradleak.defenses import build_defense

        return build_defense(self.defenses)

    def dp(self):
        """The DP-SGD client settings, or None for a plain client."""
        from gradleak.fl.dpsgd import dp_settings

        return dp_settings(self.dp_noise_multiplier, self.dp_max_grad_norm, self.dp_delta)

    def training(self) -> LocalTraining:
        return LocalTraining(protocol=Protocol(self.protocol), lr=self.lr, epochs=self.epochs,
                             batch_size=self.local_batch_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["indices"] = None if self.indices is None else list(self.indices)
        d["model_options"] = dict(self.model_options)
        d["attack_options"] = dict(self.attack_options)
        d["defenses"] = list(self.defenses)
        return d


def config_keys() -> tuple[str, ...]:
    """Every setting of an audit, in field order: the keys a config or sweep file may use."""
    from dataclasses import fields

    return tuple(f.name for f in fields(AuditConfig))


@dataclass(frozen=True)
class AuditRun:
    """An audit's result with the images behind it (pixel space, matched order)."""

    result: AuditResult
    original: torch.Tensor
    reconstruction: torch.Tensor
    true_labels: torch.Tensor
    predicted_labels: torch.Tensor | None
    class_names: tuple[str, ...]
    reconstruction_record: Reconstruction


def choose_indices(config: AuditConfig, dataset_size: int) -> list[int]:
    if config.indices is not None:
        return [int(i) for i in config.indices]
    if config.batch_size > dataset_size:
        raise GradleakError(f"batch_size {config.batch_size} exceeds the dataset's {dataset_size} images")
    if config.batch_size == 1:
        return [0]
    gen = torch.Generator().manual_seed(config.seed)
    return torch.randperm(dataset_size, generator=gen)[: config.batch_size].tolist()


def versions() -> dict[str, str]:
    import gradleak

    return {"gradleak": gradleak.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def defense_seed_of(seed: int) -> int:
    """The defense's seed, independent of the client's and the attack's streams."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


def run_audit(config: AuditConfig, callback: ProgressCallback | None = None) -> AuditRun:
    """Simulate the client, attack its update, and measure the leak."""
    from gradleak.data import load_dataset
    from gradleak.metrics import evaluate_images
    from gradleak.models import build_model

    t0 = time.perf_counter()
    attack = make_attack(ATTACKS.get(config.attack), config.attack_options)
    data = load_dataset(config.dataset, config.data_root, split=config.split, download=config.download,
                        image_size=config.image_size)
    indices = choose_indices(config, len(data))
    images, labels = data.batch(indices)
    norm = data.normalization
    x = norm.normalize(images)
    model = build_model(config.model, num_classes=data.num_classes, input_shape=data.image_shape,
                        seed=config.seed, checkpoint=config.checkpoint, **dict(config.model_options))
    outputs = output_classes(model, data.image_shape)
    if outputs < data.num_classes:
        raise GradleakError(
            f"model {config.model!r} has {outputs} outputs but dataset {config.dataset!r} has {data.num_classes} classes"
        )
    t1 = time.perf_counter()

    training = config.training()
    update, privacy = simulate_any_client(model, x, labels, training, config.dp(), mode=config.mode, seed=config.seed)
    defense = config.defense()
    defense_seed = defense_seed_of(config.seed)
    update = defense.transform(update, seed=defense_seed, client=ClientBatch(model, x, labels, training, config.mode))
    t2 = time.perf_counter()

    given = config.labels == "given"
    knowledge = AttackerKnowledge(
        num_samples=len(indices),
        input_shape=data.image_shape,
        num_classes=outputs,
        label_knowledge=LabelKnowledge.GIVEN if given else LabelKnowledge.UNKNOWN,
        labels=labels if given else None,
        knows_training=config.knows_training,
        training=training if config.knows_training else None,
        bounds=norm.bounds(),
        defense=defense if config.knows_defense else None,
        defense_seed=defense_seed if config.knows_mask else None,
    )
    attack_seed = config.seed if config.attack_seed is None else config.attack_seed
    recon = attack.reconstruct(model, update, knowledge, seed=attack_seed, callback=callback)
    t3 = time.perf_counter()

    rec_pixels = norm.denormalize(recon.data).clamp(0, 1)
    metrics = evaluate_images(rec_pixels, images, predicted_labels=recon.labels, true_labels=labels)
    matched = rec_pixels[list(metrics.assignment)]
    t4 = time.perf_counter()

    settings = config.to_dict() | {"indices": indices, "local_steps": update.local_steps,
                                   "dataset_source": data.source}
    result = AuditResult(
        settings=settings,
        assumptions=recon.assumptions,
        label_knowledge=recon.label_knowledge,
        metrics=metrics,
        timings={"setup_s": t1 - t0, "client_s": t2 - t1, "attack_s": t3 - t2, "metrics_s": t4 - t3,
                 "total_s": t4 - t0, "attack_iterations": recon.iterations,
                 "s_per_iteration": (t3 - t2) / max(recon.iterations, 1)},
        status=recon.status,
        seed=config.seed,
        versions=versions(),
        restart_losses=recon.restart_losses,
        restart_statuses=recon.restart_statuses,
        peak_memory_bytes=recon.peak_memory_bytes,
        restart_mode=recon.restart_mode,
        units=recon.units,
        model_mode=config.mode,
        defenses=update.defenses,
        privacy=None if privacy is None else privacy.to_json(),
    )
    predicted = None if recon.labels is None else recon.labels[list(metrics.assignment)]
    return AuditRun(result, images, matched, labels, predicted, data.classes, recon)
