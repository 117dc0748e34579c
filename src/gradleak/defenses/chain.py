"""A chain of defenses applied in order is itself a defense.

Each link draws from its own seed, spawned from the chain's seed, so adding a link does
not change the randomness of the others. The empty chain returns the update unchanged,
bit for bit. The chain's conditional folds the links' conditionals from the last to the
first: link i models what it does given a model of everything after it.

A training defense (DP-SGD, ATS) may only be the first link: it recomputes the update
from the client's batch, so any link before it would be thrown away while the update's
record still named it. A post-processing link after it acts on what it produced.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from gradleak.defenses.base import ClientBatch, Defense, TrainingDefense, check_seed
from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate


class Chain(Defense):
    """Apply `defenses` one after another (`Chain([])` is the identity)."""

    name = "chain"

    def __init__(self, defenses: Sequence[Defense] = ()) -> None:
        defenses = tuple(defenses)
        for i, d in enumerate(defenses):
            if not isinstance(d, Defense):
                raise GradleakError(f"defenses[{i}] must be a Defense, got {type(d).__name__}")
            if isinstance(d, Chain):
                raise GradleakError(f"defenses[{i}] is a chain: pass its links instead")
            if isinstance(d, TrainingDefense) and i > 0:
                before = " then ".join(x.spec() for x in defenses[:i])
                raise GradleakError(
                    f"defense {d.spec()!r} changes how the client trains and recomputes the update from the "
                    f"client's batch, so it must come first; after {before} it would throw their output away. "
                    f"Put it first: {' then '.join([d.spec()] + [x.spec() for x in defenses if x is not d])}")
        self.defenses = defenses

    @property
    def training(self) -> TrainingDefense | None:
        """The training defense that opens the chain, if any."""
        return self.defenses[0] if self.defenses and isinstance(self.defenses[0], TrainingDefense) else None

    @property
    def needs_client(self) -> bool:  # type: ignore[override]
        return any(d.needs_client for d in self.defenses)

    def spec(self) -> str:
        return " ".join(d.spec() for d in self.defenses) or "none"

    def _tensors(self, tensors, generator, client):  # pragma: no cover - transform is overridden
        raise NotImplementedError

    def transform(self, update: ClientUpdate, *, seed: int = 0, client: ClientBatch | None = None) -> ClientUpdate:
        check_seed(seed)
        for defense, link_seed in zip(self.defenses, self._seeds(seed)):
            update = defense.transform(update, seed=link_seed, client=client)
        return update

    def conditional(self, after, *, seed: int | None = None):
        seeds = [None] * len(self.defenses) if seed is None else self._seeds(seed)
        for defense, link_seed in zip(reversed(self.defenses), reversed(seeds)):
            after = defense.conditional(after, seed=link_seed)
        return after

    def _seeds(self, seed: int) -> list[int]:
        return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(len(self.defenses))]

    def __len__(self) -> int:
        return len(self.defenses)
