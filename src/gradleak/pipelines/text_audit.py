"""One text audit: sentences drawn, a text client's update, defended, attacked and scored.

`TextAuditConfig` holds every setting of one text audit and is checked in full when it
is made (a wrong name lists the known ones); `run_text_audit` runs it. `gradleak
text-attack` and the sweep's text cells both run through here, so a sweep cell and the
command with the same settings draw the same sentences and build the same model.

The sentences: `batch_size` of the corpus (the built-in Python-reference corpus, or a
user's text file / CSV column) drawn without replacement under `seed`, cut to
`max_length` tokens. The model: `TEXT_MODELS[model]` under `seed` (optionally wrapped in
LoRA adapters of rank `lora_rank`: only the adapters are shared). The update: FedSGD or
FedAvg (`protocol`, `lr`, `epochs`, `local_batch_size`), then the update defenses
`defenses` (specs as in `gradleak attack`; defenses that change how the client trains
are image-only and refused) and Gaussian noise of standard deviation `noise` (absolute,
0: none; the number a sweep axis can plot a curve against).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from gradleak.attacks.text import TEXT_ATTACKS
from gradleak.checks import (
    check_choice,
    check_int,
    check_mapping,
    check_optional_str,
    check_positive_float,
    check_positive_int,
    check_seed,
    check_str,
    fail,
)
from gradleak.defenses import Chain, build_defense
from gradleak.devices import check_device_spec
from gradleak.errors import GradleakError
from gradleak.records import LocalTraining, Protocol
from gradleak.registry import check_options
from gradleak.text.metrics import AlignedPair, TextMetrics
from gradleak.text.models import TEXT_MODELS
from gradleak.text.records import TextReconstruction

# the task each text model trains on (every TEXT_MODELS name has one)
MODEL_TASKS = {"gpt2": "causal-lm", "bert": "classification"}
MIN_POSITIONS = 64  # models get at least this many positions, so one model serves several max_length values


@dataclass(frozen=True)
class TextAuditConfig:
    """Every setting of one text audit; defaults: dager on the small GPT-2-like model, 4 sentences."""

    model: str = "gpt2"  # TEXT_MODELS: gpt2 (causal LM) or bert (sequence classifier)
    model_options: Mapping[str, Any] = field(default_factory=dict)  # size, layers, width, heads, checkpoint
    attack: str = "dager"  # TEXT_ATTACKS
    attack_options: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 4  # sentences in the client's batch
    max_length: int = 32  # tokens per sentence, special tokens included
    protocol: str = "fedsgd"
    lr: float = 0.1
    epochs: int = 1
    local_batch_size: int | None = None
    lora_rank: int | None = None  # LoRA adapters of this rank (peft); only they are shared
    defenses: tuple[str, ...] = ()  # update defenses in order ("topk:keep=0.1", ...)
    noise: float = 0.0  # Gaussian noise std added after `defenses` (absolute; 0: none)
    text: str | None = None  # a UTF-8 file, one sequence per line (None: the built-in corpus)
    csv: str | None = None  # a CSV file with a header row; `column` names the text column
    column: str = "text"
    tokenizer: str | None = None  # a tokenizer.json (None: the built-in BPE tokenizer)
    seed: int = 0  # the model, the sentence draw, the client, the defenses and the attack
    device: str = "cpu"  # the text attacks are tested on the CPU

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", TEXT_MODELS.entry(check_str("model", self.model)).name)
        check_choice("model", self.model, tuple(MODEL_TASKS))
        object.__setattr__(self, "model_options", check_mapping("model_options", self.model_options))
        object.__setattr__(self, "attack", TEXT_ATTACKS.entry(check_str("attack", self.attack)).name)
        object.__setattr__(self, "attack_options", check_mapping("attack_options", self.attack_options))
        check_positive_int("batch_size", self.batch_size)
        check_int("max_length", self.max_length, low=2)
        check_choice("protocol", self.protocol, [p.value for p in Protocol])
        if self.lora_rank is not None:
            check_positive_int("lora_rank", self.lora_rank)
        if isinstance(self.defenses, str) or not all(isinstance(d, str) for d in self.defenses):
            raise fail("defenses", "a list of defense specs such as 'topk:keep=0.1'", self.defenses)
        object.__setattr__(self, "defenses", tuple(self.defenses))
        object.__setattr__(self, "noise", check_positive_float("noise", self.noise, allow_zero=True))
        for name in ("text", "csv", "tokenizer"):
            check_optional_str(name, getattr(self, name))
        if self.text is not None and self.csv is not None:
            raise GradleakError("give text or csv, not both")
        check_str("column", self.column)
        check_seed(self.seed)
        object.__setattr__(self, "device", check_device_spec(self.device))
        self.training()  # lr, epochs, local batch size
        self.defense()  # the specs parse, and none changes how the client trains
        TEXT_ATTACKS.create(self.attack, self.attack_options)  # the attack's options
        check_options("text model", self.model, TEXT_MODELS.get(self.model), self.model_options,
                      fixed=("vocab_size", "seed", "max_length", "num_classes"))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "TextAuditConfig":
        """A config from plain settings (YAML, a stored cell): lists become tuples, one defense spec a list."""
        if not isinstance(settings, Mapping):
            raise fail("settings", "a mapping of setting names to values", settings)
        s = dict(settings)
        if isinstance(s.get("defenses"), str):
            s["defenses"] = (s["defenses"],)
        if isinstance(s.get("defenses"), list):
            s["defenses"] = tuple(s["defenses"])
        unknown = sorted(set(map(str, s)) - set(text_config_keys()))
        if unknown:
            raise GradleakError(f"unknown text settings {unknown}; allowed: {', '.join(text_config_keys())}")
        return cls(**s)

    @property
    def task(self) -> str:
        return MODEL_TASKS[self.model]

    def training(self) -> LocalTraining:
        return LocalTraining(protocol=Protocol(self.protocol), lr=self.lr, epochs=self.epochs,
                             batch_size=self.local_batch_size)

    def defense(self) -> Chain:
        chain = build_defense(self.defenses + ((f"gaussian:sigma={self.noise!r}",) if self.noise else ()))
        if chain.needs_client:
            raise GradleakError(f"defenses {list(self.defenses)}: defenses that change how the client trains "
                                "(dpsgd, ats, soteria) work on image batches only; text takes update defenses")
        return chain

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_options"] = dict(self.model_options)
        d["attack_options"] = dict(self.attack_options)
        d["defenses"] = list(self.defenses)
        return d


def text_config_keys() -> tuple[str, ...]:
    """Every setting of a text audit, in field order."""
    return tuple(f.name for f in fields(TextAuditConfig))


@dataclass(frozen=True)
class TextAuditRun:
    """What one text audit produced: the batch's sequences, the attack's output and its scores."""

    config: TextAuditConfig
    originals: tuple[tuple[int, ...], ...]
    original_texts: tuple[str, ...]
    reconstruction: TextReconstruction
    reconstruction_texts: tuple[str, ...]
    metrics: TextMetrics
    pairs: tuple[AlignedPair, ...]  # per original, aligned with its matched reconstruction
    labels: tuple[int, ...] | None  # the batch's class labels (classification)
    timings: Mapping[str, float]  # seconds: setup_s (data, model, update), attack_s, total_s


def run_text_audit(config: TextAuditConfig) -> TextAuditRun:
    """Run one text audit (see the module docstring)."""
    import torch

    from gradleak.devices import resolve_device
    from gradleak.text.client import text_update
    from gradleak.text.corpus import builtin_corpus, load_csv, load_lines
    from gradleak.text.metrics import aligned_pairs, text_metrics
    from gradleak.text.models import lora_model
    from gradleak.text.records import TextKnowledge
    from gradleak.text.tokenizer import EOS, builtin_tokenizer, load_tokenizer

    t0 = time.perf_counter()
    attack = TEXT_ATTACKS.create(config.attack, config.attack_options)
    corpus = (load_csv(config.csv, config.column) if config.csv else load_lines(config.text) if config.text
              else builtin_corpus())
    n = config.batch_size
    if n > len(corpus):
        raise GradleakError(f"batch_size must be at most the corpus's {len(corpus)} sequences, got {n}")
    tok = load_tokenizer(config.tokenizer) if config.tokenizer else builtin_tokenizer()
    idx = torch.randperm(len(corpus), generator=torch.Generator().manual_seed(config.seed))[:n].tolist()
    fixed: dict[str, Any] = {"vocab_size": tok.vocab_size, "seed": config.seed,
                             "max_length": max(MIN_POSITIONS, config.max_length)}
    classify = config.task == "classification"
    if classify:
        fixed["num_classes"] = max(2, len(corpus.classes))
    model = TEXT_MODELS.create(config.model, config.model_options, **fixed)
    if config.lora_rank is not None:
        model = lora_model(model, config.lora_rank, seed=config.seed)
    model = model.to(resolve_device(config.device))
    labels = tuple(corpus.labels[i] for i in idx) if classify else None
    batch = tok.batch([corpus.sentences[i] for i in idx], max_length=config.max_length, task=config.task,
                      labels=labels)
    update = config.defense().transform(text_update(model, batch, config.training(), seed=config.seed),
                                        seed=config.seed)
    knowledge = TextKnowledge(n, length=int(batch.input_ids.shape[1]), end_token=None if classify else EOS)
    t1 = time.perf_counter()
    rec = attack.reconstruct(model, update, knowledge, seed=config.seed)
    originals = batch.sequences()
    scores = text_metrics(originals, rec.sequences, tok.decode)
    return TextAuditRun(
        config=config, originals=originals, original_texts=tuple(tok.decode(s) for s in originals),
        reconstruction=rec, reconstruction_texts=tuple(tok.decode(s) for s in rec.sequences), metrics=scores,
        pairs=aligned_pairs(originals, rec.sequences, scores.assignment, tok.tokens), labels=labels,
        timings={"setup_s": t1 - t0, "attack_s": rec.seconds, "total_s": time.perf_counter() - t0})


__all__ = ["MODEL_TASKS", "TextAuditConfig", "TextAuditRun", "run_text_audit", "text_config_keys"]
