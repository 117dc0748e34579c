"""Typed records for text: a batch of token sequences and an attack's reconstruction.

Text updates are ordinary `ClientUpdate`s (the gradient or delta of the model's
parameters), so every defense that transforms an update applies to them unchanged; what
differs from images is the data (token ids with an attention mask) and what an attack
returns (token sequences of varying length), hence these two records.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradleak.checks import check_choice, check_positive_int
from gradleak.errors import GradleakError

TASKS = ("causal-lm", "classification")


@dataclass(frozen=True)
class TextBatch:
    """Padded token sequences as the client trains on them.

    `input_ids` (B, T) int64, right-padded; `attention_mask` (B, T) with 1 on real tokens
    and 0 on padding (every row starts with a run of ones and has at least one);
    `labels` (B,) class indices for "classification", None for "causal-lm" (the targets
    are the next tokens).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    task: str = "causal-lm"
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        ids, mask = self.input_ids, self.attention_mask
        if ids.ndim != 2 or ids.dtype != torch.long:
            raise GradleakError(f"input_ids must be a (batch, length) int64 tensor, got {tuple(ids.shape)} {ids.dtype}")
        if mask.shape != ids.shape:
            raise GradleakError(f"attention_mask must have input_ids' shape {tuple(ids.shape)}, got {tuple(mask.shape)}")
        m = mask.long()
        if ((m != 0) & (m != 1)).any() or (m.sum(1) < 1).any() or (m[:, 1:] > m[:, :-1]).any():
            raise GradleakError("attention_mask must be right-padded 0/1 rows with at least one 1 each")
        if self.task == "classification":
            if self.labels is None or self.labels.shape != (ids.shape[0],):
                raise GradleakError(f"classification needs labels of shape ({ids.shape[0]},), got "
                                    f"{None if self.labels is None else tuple(self.labels.shape)}")
        elif self.labels is not None:
            raise GradleakError("causal-lm batches take no labels (the targets are the next tokens)")

    @property
    def num_sequences(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.attention_mask.long().sum(1))

    def sequences(self) -> tuple[tuple[int, ...], ...]:
        """Each sequence's token ids without padding."""
        return tuple(tuple(int(t) for t in row[:n]) for row, n in zip(self.input_ids, self.lengths))


@dataclass(frozen=True)
class TextReconstruction:
    """A text attack's output: token sequences (any number, any lengths) and how it ran.

    `status` is "ok", "partial" (the attack stopped with fewer sequences than asked or
    hit a budget) or "failed" (nothing recovered); `notes` say why. `labels` are the
    recovered class labels of a classification batch (None when not attempted).
    `span_ranks` are the ranks the exact attacks read off the layers they used.
    """

    sequences: tuple[tuple[int, ...], ...]
    seconds: float
    status: str = "ok"
    labels: tuple[int, ...] | None = None
    span_ranks: tuple[int, ...] = ()
    loss: float | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice("status", self.status, ("ok", "partial", "failed"))
        object.__setattr__(self, "sequences", tuple(tuple(int(t) for t in s) for s in self.sequences))




@dataclass(frozen=True)
class TextKnowledge:
    """What the text attacker knows besides the model and the update.

    `num_sequences`: the batch size (the exact attacks do not need it and return what the
    gradient holds; the optimization attacks optimize that many sequences).
    `length`: the padded length the optimization attacks optimize (None: unknown).
    `end_token`: the token the client appends to every sequence ("<eos>" of a causal LM;
    the last position predicts nothing, so that token never reaches the gradient and an
    attack appends it to what it recovers). `labels`: the batch's class labels, when known.
    """

    num_sequences: int = 1
    length: int | None = None
    end_token: int | None = None
    labels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_positive_int("num_sequences", self.num_sequences)
        if self.length is not None:
            check_positive_int("length", self.length)
        if self.labels is not None and len(self.labels) != self.num_sequences:
            raise GradleakError(f"labels must hold num_sequences ({self.num_sequences}) labels, got {len(self.labels)}")


__all__ = ["TASKS", "TextBatch", "TextKnowledge", "TextReconstruction"]
