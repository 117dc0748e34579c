"""The defense base class: one verb, `transform`.

A defense maps the `ClientUpdate` a client would share to the one it does share. It
never mutates its input: it returns a new update whose `defenses` names what was applied
(its `spec`, parameters included, as the CLI writes it: "qsgd:bits=4"). Every random
step draws from a generator seeded by the `seed` argument, so the same seed gives the
same update. Most defenses post-process the update alone; a few (Soteria) need the
client's batch and model, handed over as a `ClientBatch`.

A `TrainingDefense` (DP-SGD, ATS) is another kind: it changes how the client trains, so
it recomputes the update from the client's batch. It can only come first in a chain
(`Chain` refuses it anywhere else): behind a post-processing link it would throw that
link's output away while the record still named it.

A defense also tells the attacker that knows it what it does to an update: `conditional`
returns the model p(observed | clean update) that the Bayes attack maximizes
(Balunovic et al., ICLR 2022).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Sequence

import torch
from torch import nn

from gradleak.checks import check_fraction, check_positive_float, check_seed
from gradleak.devices import generator as seeded_generator
from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate, LocalTraining, check_model_mode

if TYPE_CHECKING:
    from gradleak.defenses.conditionals import Conditional


@dataclass(frozen=True)
class ClientBatch:
    """What a client-side defense may read: the model at the start of the round (not to be
    modified), the batch in model space, its labels, how the client trains on it (its
    model mode and its own seed, which drives shuffling and a DP client's noise)."""

    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    training: LocalTraining = LocalTraining()
    model_mode: str = "eval"
    seed: int = 0

    def __post_init__(self) -> None:
        check_model_mode(self.model_mode)
        check_seed(self.seed)


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
        device = update.tensors[0].device if update.tensors else torch.device("cpu")
        tensors = self._tensors(tuple(update.tensors), seeded_generator(device, seed), client)
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


class TrainingDefense(Defense):
    """Changes how the client trains (DP-SGD, ATS): the shared update is recomputed from the
    client's batch, so it must be the first defense applied (`Chain` enforces it)."""

    needs_client = True

    @abstractmethod
    def train(self, client: ClientBatch, seed: int) -> ClientUpdate:
        """The update the client computes under this defense (`seed`: the defense's own draws)."""

    def _tensors(self, tensors, generator, client):  # pragma: no cover - transform is overridden
        raise NotImplementedError

    def transform(self, update: ClientUpdate, *, seed: int = 0, client: ClientBatch | None = None) -> ClientUpdate:
        check_seed(seed)
        if not isinstance(client, ClientBatch):
            raise GradleakError(f"defense {self.name!r} changes how the client trains: pass client=ClientBatch(...)")
        if update.defenses:
            raise GradleakError(
                f"defense {self.name!r} changes how the client trains and recomputes the update from its batch, "
                f"so it must come first; this update already went through {', '.join(update.defenses)}")
        trained = self.train(client, seed)
        if tuple(trained.names) != tuple(update.names):
            raise GradleakError(f"defense {self.name!r}: the client's model does not produce the update's tensors "
                                f"({len(trained.names)} vs {len(update.names)}); pass the model the update came from")
        return dataclasses.replace(trained, defenses=(self.spec(),))


def check_positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    return check_positive_float(name, value, allow_zero=allow_zero)


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


__all__ = ["ClientBatch", "Defense", "NotModeled", "TrainingDefense", "check_fraction", "check_positive",
           "check_seed", "replace_tensors"]
