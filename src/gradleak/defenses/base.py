"""The defense base class: one verb, `transform`.

A defense maps the `ClientUpdate` a client would share to the one it does share. It
never mutates its input: it returns a new update whose `defenses` names what was applied
(its `spec`, parameters included, as the CLI writes it: "qsgd:bits=4"). Every random
step draws from a generator seeded by the `seed` argument, so the same seed gives the
same update. Most defenses post-process the update alone; a few (Soteria) need the
client's batch and model, handed over as a `ClientBatch`.

A defense also tells the attacker that knows it what it does to an update: `conditional`
returns the model p(observed | clean update) that the Bayes attack maximizes
(Balunovic et al., ICLR 2022).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Sequence

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate, LocalTraining

if TYPE_CHECKING:
    from gradleak.defenses.conditionals import Conditional


@dataclass(frozen=True)
class ClientBatch:
    """What a client-side defense may read: the model at the start of the round (not to be
    modified), the batch in model space, its labels, and how the client trains on it."""

    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    training: LocalTraining = LocalTraining()
    mode: str = "eval"


class NotModeled(GradleakError):
    """The defense has no conditional p(observed | clean) for the Bayes attack."""


class Defense(ABC):
    """Transforms a client update before it is shared; never mutates the input."""

    name: ClassVar[str]
    needs_client: ClassVar[bool] = False  # True: `transform` needs the `ClientBatch`

    @abstractmethod
    def _tensors(self, tensors: tuple[torch.Tensor, ...], generator: torch.Generator,
                 client: ClientBatch | None) -> tuple[torch.Tensor, ...]:
        """The shared tensors from the clean ones (new tensors; the inputs are read only)."""

    def params(self) -> dict[str, object]:
        """The constructor arguments that define this defense, for its spec."""
        return {f: getattr(self, f) for f in getattr(self, "_spec_fields", ())}

    def spec(self) -> str:
        params = ",".join(f"{k}={_format(v)}" for k, v in self.params().items())
        return f"{self.name}:{params}" if params else self.name

    def transform(self, update: ClientUpdate, *, seed: int = 0, client: ClientBatch | None = None) -> ClientUpdate:
        """The update the client shares after this defense (a new record; `update` is unchanged)."""
        check_seed(seed)
        if self.needs_client and client is None:
            raise GradleakError(f"defense {self.name!r} works on the client's batch: pass client=ClientBatch(...)")
        generator = torch.Generator().manual_seed(seed)
        tensors = self._tensors(tuple(update.tensors), generator, client)
        return replace_tensors(update, tensors, self.spec())

    def conditional(self, after: "Conditional", *, seed: int | None = None) -> "Conditional":
        """The attacker's model of the shared update given the clean one, when `after`
        models the defenses applied after this one (`Identity` if none). `seed` is the
        seed the client's defense ran with, when the attacker knows it: it reveals random
        masks (the Bayes paper's known-mask setting), never noise."""
        raise NotModeled(f"defense {self.name!r} has no conditional for the Bayes attack; "
                         "attack it with l2, l1 or cosine, or drop it from the attacker's knowledge")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()!r})"


def replace_tensors(update: ClientUpdate, tensors: Sequence[torch.Tensor], spec: str) -> ClientUpdate:
    if len(tensors) != len(update.tensors):
        raise GradleakError(f"defense {spec!r} returned {len(tensors)} tensors for {len(update.tensors)}")
    return dataclasses.replace(update, tensors=tuple(tensors), defenses=(*update.defenses, spec))


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GradleakError(f"seed must be an integer >= 0, got {seed!r}")
    return seed


def check_fraction(name: str, value: object, *, low_open: bool = True, high_open: bool = False) -> float:
    """A float in (0, 1] by default; the bounds' openness is adjustable."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise GradleakError(f"{name} must be a number in {lo}0, 1{hi}, got {value!r}")
    return float(value)


def check_positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value >= 0 if allow_zero else value > 0):
        raise GradleakError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
