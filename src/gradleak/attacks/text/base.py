"""The text attack base class: one verb, `reconstruct`, from a model and a `ClientUpdate`
to a `TextReconstruction`.

Text attacks take token sequences, not images, so they register in their own
`TEXT_ATTACKS` registry: the image registry's invariant tests build image problems for
every member. The invariants that carry over (the caller's model and update untouched,
the same seed giving the same result) are tested for every text attack in
tests/test_text_attacks.py.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from typing import ClassVar

from torch import nn

from gradleak.checks import check_seed
from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate
from gradleak.text.records import TextKnowledge, TextReconstruction


class TextAttack(ABC):
    """One text attack: `reconstruct` the client's token sequences from an update."""

    name: ClassVar[str]

    def reconstruct(self, model: nn.Module, update: ClientUpdate, knowledge: TextKnowledge | None = None, *,
                    seed: int = 0) -> TextReconstruction:
        """Reconstruct the client's sequences (the caller's model is not modified)."""
        check_seed(seed)
        knowledge = TextKnowledge(num_sequences=update.num_samples) if knowledge is None else knowledge
        if knowledge.num_sequences != update.num_samples:
            raise GradleakError(f"knowledge.num_sequences ({knowledge.num_sequences}) differs from the update's "
                                f"num_samples ({update.num_samples})")
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            recon = self._reconstruct(model, update, knowledge, seed=seed)
        finally:
            model.train(was_training)
        return dataclasses.replace(recon, seconds=time.perf_counter() - start)

    @abstractmethod
    def _reconstruct(self, model: nn.Module, update: ClientUpdate, knowledge: TextKnowledge, *,
                     seed: int) -> TextReconstruction:
        """The attack itself, on checked inputs."""


__all__ = ["TextAttack"]
