"""A byte-level BPE tokenizer (the `tokenizers` library), trained on the built-in corpus
or read from a user's `tokenizer.json`, and the padding of texts into a `TextBatch`.

Byte-level: every string round-trips exactly (`decode(encode(s)) == s`). Special tokens
come first: 0 "<pad>", 1 "<eos>" (appended to causal-LM sequences), 2 "<cls>" (prepended
to classification sequences). The trained tokenizer is cached as JSON under
`$GRADLEAK_CACHE` (default `~/.cache/gradleak`)/text, keyed by a hash of the corpus and the
vocabulary size; training is deterministic, so a lost cache gives the same tokenizer back.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from gradleak.checks import check_int, check_positive_int
from gradleak.errors import DatasetNotFoundError, GradleakError
from gradleak.text.records import TextBatch

log = logging.getLogger(__name__)
SPECIAL = ("<pad>", "<eos>", "<cls>")
PAD, EOS, CLS = 0, 1, 2


def cache_dir() -> Path:
    return Path(os.environ.get("GRADLEAK_CACHE", Path.home() / ".cache" / "gradleak")) / "text"


class TextTokenizer:
    """A thin face over `tokenizers.Tokenizer`: ids in, ids out, and padded batches."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        for i, name in enumerate(SPECIAL):
            if tokenizer.token_to_id(name) != i:
                raise GradleakError(f"tokenizer must have {name!r} as token {i} (pad, eos, cls first)")

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def tokens(self, ids) -> list[str]:
        """Each id's text (special tokens by name), for aligned displays."""
        return [SPECIAL[i] if i < len(SPECIAL) else self.tokenizer.decode([int(i)]) for i in ids]

    def batch(self, texts, *, max_length: int = 32, task: str = "causal-lm", labels=None) -> TextBatch:
        """Right-padded token ids of `texts`, cut to `max_length` tokens: "<eos>" appended
        for causal-LM (the last position predicts nothing, so a sentence's own last token
        is then still in the loss), "<cls>" prepended for classification."""
        check_int("max_length", max_length, low=2)
        rows = []
        for text in texts:
            ids = self.encode(text)
            ids = ids[: max_length - 1] + [EOS] if task == "causal-lm" else [CLS] + ids[: max_length - 1]
            rows.append(ids)
        if not rows:
            raise GradleakError("texts must hold at least one text, got none")
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), PAD, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        lab = None if labels is None else torch.as_tensor(list(labels), dtype=torch.long)
        return TextBatch(ids, mask, task, lab)


def train_tokenizer(texts, vocab_size: int = 4096) -> TextTokenizer:
    """Train a byte-level BPE tokenizer on `texts` (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    check_int("vocab_size", vocab_size, low=len(SPECIAL) + 256)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    return TextTokenizer(tok)


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """A user's `tokenizer.json` (with "<pad>", "<eos>", "<cls>" as tokens 0, 1, 2)."""
    from tokenizers import Tokenizer

    p = Path(path)
    if not p.is_file():
        raise DatasetNotFoundError(f"tokenizer file {str(p)!r} does not exist")
    return TextTokenizer(Tokenizer.from_file(str(p)))


def builtin_tokenizer(vocab_size: int = 4096, *, cache: bool = True) -> TextTokenizer:
    """The tokenizer trained on the built-in corpus's sentences (cached, see the module docstring)."""
    from gradleak.text.corpus import builtin_corpus

    check_positive_int("vocab_size", vocab_size)
    corpus = builtin_corpus()
    key = hashlib.sha256(("\n".join(corpus.sentences) + f"|{vocab_size}").encode()).hexdigest()[:16]
    path = cache_dir() / f"bpe-{vocab_size}-{key}.json"
    if cache and path.is_file():
        return load_tokenizer(path)
    tok = train_tokenizer(corpus.sentences, vocab_size)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tok.tokenizer.save(str(tmp))
            tmp.replace(path)
        except OSError as e:  # a read-only home: train again next time
            log.warning("could not cache the tokenizer at %s: %s", path, e)
    return tok


__all__ = ["CLS", "EOS", "PAD", "SPECIAL", "TextTokenizer", "builtin_tokenizer", "cache_dir", "load_tokenizer",
           "train_tokenizer"]
