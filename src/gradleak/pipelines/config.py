"""`AuditConfig`: every setting of one audit, checked in full when it is made.

The CLI, `--config` files and sweep cells only fill it (`AuditConfig.from_settings`); a
wrong name, type or value fails here, before any data is loaded, with the setting named.
Settings renamed in this release are still read, with a warning: `mode` (now
`model_mode`), `labels: given|auto` (now `give_labels`), and `dp_noise_multiplier`,
`dp_max_grad_norm`, `dp_delta` (now the `dpsgd` training defense in `defenses`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from gradleak.attacks import ATTACKS, Attack
from gradleak.checks import (
    check_bool,
    check_choice,
    check_indices,
    check_mapping,
    check_optional_seed,
    check_optional_str,
    check_positive_float,
    check_positive_int,
    check_seed,
    check_str,
    fail,
)
from gradleak.data import DATASETS, SPLITS
from gradleak.data.clients import PARTITIONS
from gradleak.defenses import Chain, build_defense
from gradleak.defenses.dpsgd import dp_spec
from gradleak.devices import Speed, check_device_spec
from gradleak.errors import GradleakError
from gradleak.metrics import DEFAULT_METRICS, METRICS
from gradleak.records import MODEL_MODES, LocalTraining, Protocol
from gradleak.server import ServerBehaviour, parse_server

log = logging.getLogger(__name__)


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
    model_mode: str = "eval"  # the mode the client trains in, and the attacker runs the model in
    attack: str = "idlg"
    attack_options: Mapping[str, Any] = field(default_factory=dict)  # the attack's own defaults otherwise
    give_labels: bool = False  # hand the true labels to the attacker (else it optimizes or infers them)
    knows_training: bool = False
    defenses: tuple[str, ...] = ()  # defense specs in order ("dpsgd:noise_multiplier=1", "qsgd:bits=4", ...)
    knows_defense: bool = False  # the attacker knows the defense mechanism (the Bayes attack models it)
    knows_mask: bool = False  # ... and its random masks (its seed)
    metrics: tuple[str, ...] = DEFAULT_METRICS  # image metrics computed per sample (`gradleak list`)
    matching: str = "mse"  # the metric that matches reconstructions to originals
    seed: int = 0  # the model's initialization, the data draw, the client's and defense's randomness
    attack_seed: int | None = None  # the attack's random start; None: `seed` (SoK's "attack initializations")
    device: str = "auto"  # auto (the first GPU, else MPS, else the CPU), cpu, cuda, cuda:N, mps
    tf32: bool = False  # TF32 products on GPUs that have them (faster; results differ from float32's)
    cudnn_benchmark: bool = False  # cuDNN picks algorithms per shape (faster; not bitwise reproducible)
    server: str | None = None  # what the server sends ("imprint:bins=128", ...; None: the honest global model)
    # secure aggregation (`gradleak.pipelines.secagg`): clients > 1 clients, each its own batch_size samples
    # from its share of the data (partition iid or dirichlet, as `gradleak flower`), the server sees only the sum
    clients: int = 1
    secure_aggregation: bool = False
    partition: str = "iid"
    dirichlet_alpha: float = 0.5

    def __post_init__(self) -> None:
        check_str("dataset", self.dataset)
        DATASETS.entry(self.dataset)
        check_optional_str("data_root", self.data_root)
        check_bool("download", self.download)
        check_choice("split", self.split, SPLITS)
        if self.indices is not None:
            object.__setattr__(self, "indices", check_indices("indices", self.indices))
            if not self.indices:
                raise fail("indices", "a non-empty list of image indices", self.indices)
        check_positive_int("batch_size", self.batch_size)
        if self.indices is not None and len(self.indices) != self.batch_size and self.batch_size != 1:
            raise GradleakError(
                f"indices name {len(self.indices)} images but batch_size is {self.batch_size}; give one or the other"
            )
        if self.image_size is not None:
            check_positive_int("image_size", self.image_size)
        check_str("model", self.model)
        object.__setattr__(self, "model_options", check_mapping("model_options", self.model_options))
        check_optional_str("checkpoint", self.checkpoint)
        check_choice("protocol", self.protocol, [p.value for p in Protocol])
        check_choice("model_mode", self.model_mode, MODEL_MODES)
        check_str("attack", self.attack)
        object.__setattr__(self, "attack_options", check_mapping("attack_options", self.attack_options))
        for name in ("give_labels", "knows_training", "knows_defense", "knows_mask"):
            check_bool(name, getattr(self, name))
        if isinstance(self.defenses, str) or not all(isinstance(d, str) for d in self.defenses):
            raise fail("defenses", "a list of defense specs such as 'qsgd:bits=4'", self.defenses)
        object.__setattr__(self, "defenses", tuple(self.defenses))
        if isinstance(self.metrics, str) or not self.metrics or not all(isinstance(m, str) for m in self.metrics):
            raise fail("metrics", "a non-empty list of metric names", self.metrics)
        object.__setattr__(self, "metrics", tuple(METRICS.entry(m).name for m in self.metrics))
        object.__setattr__(self, "matching", METRICS.entry(check_str("matching", self.matching)).name)
        check_seed(self.seed)
        check_optional_seed(self.attack_seed, "attack_seed")
        object.__setattr__(self, "device", check_device_spec(self.device))
        check_bool("tf32", self.tf32)
        check_bool("cudnn_benchmark", self.cudnn_benchmark)
        self.training()  # lr, epochs, local batch size
        self.defense()  # parse the specs now: a typo fails before any work
        self.build_attack()  # the attack's options, likewise
        check_optional_str("server", self.server)
        self.server_behaviour()  # a server spec, likewise
        if self.knows_mask and not self.knows_defense:
            raise GradleakError("knows_mask needs knows_defense: the masks belong to a known defense")
        if self.knows_defense and not self.defenses:
            raise GradleakError("knows_defense is set but no defense is applied; add defenses")
        self._check_aggregation()

    def _check_aggregation(self) -> None:
        check_positive_int("clients", self.clients)
        check_bool("secure_aggregation", self.secure_aggregation)
        check_choice("partition", self.partition, PARTITIONS)
        object.__setattr__(self, "dirichlet_alpha", check_positive_float("dirichlet_alpha", self.dirichlet_alpha))
        if self.clients == 1:
            return
        if not self.secure_aggregation:
            raise GradleakError(f"clients={self.clients} needs secure_aggregation=true: without it the server sees "
                                "every client's update on its own, which is one single-client audit per client")
        if self.indices is not None:
            raise GradleakError("indices cannot be given with clients > 1: each client draws batch_size samples "
                                "from its own share of the data (partition)")
        if self.knows_defense or self.knows_mask:
            raise GradleakError("knows_defense/knows_mask cannot be set with clients > 1: each client applies "
                                "its defense with its own randomness before the sum, which no attack models")
        if self.server_behaviour().name == "loki":
            raise GradleakError("server loki with clients > 1 sends every client its own model: read it out with "
                                "gradleak.attacks.loki.loki_readout (experiments/secagg/loki.py), not `attack`")

    def samples_behind(self) -> int:
        """How many samples are behind the update the server observes (all clients' together)."""
        return self.clients * (self.batch_size if self.indices is None else len(self.indices))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "AuditConfig":
        """A config from plain settings (YAML, flags, a stored cell): lists become tuples,
        one defense spec, metric or index becomes a sequence, `batch_size` defaults to the
        number of indices, and renamed settings are read with a warning."""
        if not isinstance(settings, Mapping):
            raise fail("settings", "a mapping of setting names to values", settings)
        s = _renamed(dict(settings))
        for key in ("defenses", "metrics"):
            if isinstance(s.get(key), str):
                s[key] = (s[key],)
        if isinstance(s.get("indices"), int) and not isinstance(s.get("indices"), bool):
            s["indices"] = (s["indices"],)
        for key in ("indices", "defenses", "metrics"):
            if isinstance(s.get(key), list):
                s[key] = tuple(s[key])
        indices = s.get("indices")
        if indices is not None:
            s.setdefault("batch_size", len(check_indices("indices", indices)))
        unknown = sorted(set(map(str, s)) - set(config_keys()))
        if unknown:
            raise GradleakError(f"unknown settings {unknown}; allowed: {', '.join(config_keys())}")
        return cls(**s)

    def defense(self) -> Chain:
        return build_defense(self.defenses)

    def server_behaviour(self) -> ServerBehaviour:
        return parse_server(self.server or "honest")

    def build_attack(self) -> Attack:
        return ATTACKS.create(self.attack, self.attack_options)

    def training(self) -> LocalTraining:
        return LocalTraining(protocol=Protocol(self.protocol), lr=self.lr, epochs=self.epochs,
                             batch_size=self.local_batch_size)

    def speed(self) -> Speed:
        return Speed(tf32=self.tf32, cudnn_benchmark=self.cudnn_benchmark)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["indices"] = None if self.indices is None else list(self.indices)
        d["model_options"] = dict(self.model_options)
        d["attack_options"] = dict(self.attack_options)
        d["defenses"] = list(self.defenses)
        d["metrics"] = list(self.metrics)
        for name, default in AGGREGATION_DEFAULTS.items():  # absent at their defaults: earlier cells keep their keys
            if d[name] == default:
                del d[name]
        return d


AGGREGATION_DEFAULTS = {"clients": 1, "secure_aggregation": False, "partition": "iid", "dirichlet_alpha": 0.5}

# settings renamed in this release: old name -> what it became
RENAMED = {"mode": "model_mode", "labels": "give_labels", "dp_noise_multiplier": "defenses",
           "dp_max_grad_norm": "defenses", "dp_delta": "defenses"}


def _renamed(s: dict[str, Any]) -> dict[str, Any]:
    """Map the renamed settings of earlier releases to today's, warning once per name."""
    if "mode" in s:
        log.warning("setting 'mode' is now 'model_mode'; 'mode' will be removed in the next release")
        s.setdefault("model_mode", s.pop("mode"))
    if "labels" in s:
        log.warning("setting 'labels: given|auto' is now 'give_labels: true|false'; 'labels' will be removed "
                    "in the next release")
        value = s.pop("labels")
        s.setdefault("give_labels", check_choice("labels", value, ("auto", "given")) == "given")
    dp = {k: s.pop(k) for k in ("dp_noise_multiplier", "dp_max_grad_norm", "dp_delta") if k in s}
    if dp:
        log.warning("settings dp_noise_multiplier/dp_max_grad_norm/dp_delta are now the 'dpsgd' defense "
                    "(defenses: ['dpsgd:noise_multiplier=X,max_grad_norm=Y']); they will be removed in the next "
                    "release")
        if dp.get("dp_noise_multiplier") is not None:
            spec = dp_spec(dp["dp_noise_multiplier"], dp.get("dp_max_grad_norm", 1.0) or 1.0,
                           dp.get("dp_delta", 1e-5) or 1e-5)
            defenses = s.get("defenses") or ()
            s["defenses"] = (spec, *((defenses,) if isinstance(defenses, str) else defenses))
    return s


def config_keys() -> tuple[str, ...]:
    """Every setting of an audit, in field order: the keys a config or sweep file may use
    (the renamed ones of earlier releases are still read, with a warning)."""
    return tuple(f.name for f in fields(AuditConfig))


def accepted_keys() -> tuple[str, ...]:
    """Today's settings and the renamed ones still read."""
    return config_keys() + tuple(RENAMED)


__all__ = ["AuditConfig", "RENAMED", "accepted_keys", "config_keys"]
