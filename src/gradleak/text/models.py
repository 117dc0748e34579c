"""Text models built from `transformers` configurations: a GPT-2-like causal language
model and a BERT-like sequence classifier, small by default, randomly initialized under a
seed or loaded from a local checkpoint (a folder with config.json and model.safetensors);
optionally wrapped with LoRA adapters (`peft`) so that only the adapters train.

Dropout is 0 and attention runs on the "eager" kernel (the continuous attacks need its
double backward). Nothing is downloaded: a checkpoint is read with `local_files_only`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from gradleak.checks import check_choice, check_int, check_positive_int, check_seed
from gradleak.errors import DatasetNotFoundError, GradleakError
from gradleak.registry import Registry

# (layers, width, heads): the small default and the real published sizes
SIZES = {"tiny": (2, 64, 2), "small": (2, 256, 4), "gpt2": (12, 768, 12), "bert-base": (12, 768, 12)}
TEXT_MODELS: Registry = Registry("text model")


def _seeded(build, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(check_seed(seed))
        return build()


def _size(size: str, layers: int | None, width: int | None, heads: int | None) -> tuple[int, int, int]:
    check_choice("size", size, tuple(SIZES))
    n, d, h = SIZES[size]
    n = n if layers is None else check_positive_int("layers", layers)
    d = d if width is None else check_positive_int("width", width)
    h = h if heads is None else check_positive_int("heads", heads)
    if d % h:
        raise GradleakError(f"width must be a multiple of heads ({h}), got {d}")
    return n, d, h


def _checkpoint(path: str | Path, cls) -> nn.Module:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise DatasetNotFoundError(f"checkpoint folder {str(p)!r} has no config.json")
    return cls.from_pretrained(str(p), local_files_only=True, attn_implementation="eager").eval()


@TEXT_MODELS.register("gpt2", "GPT-2-like causal language model (transformers GPT2LMHeadModel)")
def gpt2_model(*, vocab_size: int, seed: int = 0, size: str = "small", layers: int | None = None,
               width: int | None = None, heads: int | None = None, max_length: int = 64,
               checkpoint: str | None = None) -> nn.Module:
    """A GPT-2-like causal LM: `size` "small" is 2 layers of width 256 (4 heads), "gpt2"
    the published 12 x 768; `layers`/`width`/`heads` override it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    if checkpoint is not None:
        return _checkpoint(checkpoint, GPT2LMHeadModel)
    n, d, h = _size(size, layers, width, heads)
    config = GPT2Config(vocab_size=check_positive_int("vocab_size", vocab_size), n_positions=check_int(
        "max_length", max_length, low=2), n_embd=d, n_layer=n, n_head=h, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=1, eos_token_id=1, pad_token_id=0)
    config._attn_implementation = "eager"
    return _seeded(lambda: GPT2LMHeadModel(config), seed).eval()


@TEXT_MODELS.register("bert", "BERT-like sequence classifier (transformers BertForSequenceClassification)")
def bert_model(*, vocab_size: int, num_classes: int = 2, seed: int = 0, size: str = "small",
               layers: int | None = None, width: int | None = None, heads: int | None = None,
               max_length: int = 64, checkpoint: str | None = None) -> nn.Module:
    """A BERT-like classifier: `size` "small" is 2 layers of width 256 (4 heads, MLP 4x),
    "bert-base" the published 12 x 768."""
    from transformers import BertConfig, BertForSequenceClassification

    if checkpoint is not None:
        return _checkpoint(checkpoint, BertForSequenceClassification)
    n, d, h = _size(size, layers, width, heads)
    config = BertConfig(vocab_size=check_positive_int("vocab_size", vocab_size), hidden_size=d, num_hidden_layers=n,
                        num_attention_heads=h, intermediate_size=4 * d, max_position_embeddings=check_int(
                            "max_length", max_length, low=2), type_vocab_size=1, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, classifier_dropout=0.0, pad_token_id=0,
                        num_labels=check_int("num_classes", num_classes, low=2))
    config._attn_implementation = "eager"
    return _seeded(lambda: BertForSequenceClassification(config), seed).eval()


def lora_model(model: nn.Module, rank: int = 8, *, seed: int = 0, alpha: float | None = None) -> nn.Module:
    """A copy of `model` with LoRA adapters (peft) on the attention projections; only the
    adapters (and a classifier's head) require gradients."""
    from peft import LoraConfig, get_peft_model

    check_positive_int("rank", rank)
    kind = model.config.model_type
    targets = {"gpt2": ["c_attn"], "bert": ["query", "key", "value"]}.get(kind)
    if targets is None:
        raise GradleakError(f"LoRA adapters are set up for gpt2 and bert models, got model_type {kind!r}")
    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules=targets, lora_dropout=0.0,
                        fan_in_fan_out=kind == "gpt2", modules_to_save=["classifier"] if kind == "bert" else None)
    return _seeded(lambda: get_peft_model(copy.deepcopy(model), config), seed).eval()


__all__ = ["SIZES", "TEXT_MODELS", "bert_model", "gpt2_model", "lora_model"]
