"""What the server sends: the server behaviour concept and its record.

An honest server sends the global model. A malicious server (the SoK's assumption level
5, Du et al. 2024) sends a model it built or modified so that the update the unchanged
client computes on it leaks the client's data; the matching read-out attack reads that
update. One verb, `ServerBehaviour.build(model, input_shape, ...) -> ServerModel`; the
caller's model is never modified.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from gradleak.checks import check_seed
from gradleak.errors import GradleakError
from gradleak.records import Assumption
from gradleak.server.expectation import Expectation, expected_recovery


@dataclass(frozen=True)
class ServerModel:
    """A model as a server sends it, with what its read-out needs.

    `model` is what the client receives and trains; `spec` the behaviour that built it
    ("imprint:bins=128,..."); `assumption` its threat level (MALICIOUS for every server
    that is not honest); `layer` the name of the layer whose update the read-out reads
    ("" when none); `probabilities` the server's belief of the chance that one sample
    falls in each bin of that layer (empty when it has no bins: no closed-form expectation);
    `target` the class a fishing server isolates.
    """

    model: nn.Module
    spec: str
    assumption: Assumption = Assumption.BASIC
    layer: str = ""
    probabilities: tuple[float, ...] = ()
    target: int | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise GradleakError(f"ServerModel.model must be a torch nn.Module, got {type(self.model).__name__}")
        object.__setattr__(self, "assumption", Assumption(self.assumption))
        object.__setattr__(self, "probabilities", tuple(float(p) for p in self.probabilities))

    @property
    def malicious(self) -> bool:
        return self.assumption is Assumption.MALICIOUS

    def expected(self, num_samples: int) -> Expectation | None:
        """The expected recovery for a batch of `num_samples`, before any attack (None: no
        closed form for this behaviour)."""
        if not self.probabilities:
            return None
        return expected_recovery(num_samples, probabilities=self.probabilities)


class ServerBehaviour(ABC):
    """One server behaviour: `build` the model the client receives.

    `public_data` names a data set the behaviour estimates its parameters from (None: it
    needs none); the pipelines load it and pass its images, in the client's model space,
    as `public`.
    """

    name: ClassVar[str]
    malicious: ClassVar[bool] = True
    _spec_fields: ClassVar[tuple[str, ...]] = ()
    public_data: str | None = None

    def params(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self._spec_fields}

    def spec(self) -> str:
        params = ",".join(f"{k}={v}" for k, v in self.params().items() if v is not None)
        return f"{self.name}:{params}" if params else self.name

    def expected(self, num_samples: int) -> Expectation | None:
        """The recovery this behaviour expects for a batch of `num_samples`, known before it
        builds anything (None: no closed form)."""
        return None

    def build(self, model: nn.Module, input_shape: tuple[int, ...], *, seed: int = 0,
              public: torch.Tensor | None = None) -> ServerModel:
        """The model this server sends in place of `model` (not modified), for inputs of
        `input_shape`; `seed` draws its random parts, `public` (N, *input_shape) are public
        images in model space."""
        if not isinstance(model, nn.Module):
            raise GradleakError(f"model must be a torch nn.Module, got {type(model).__name__}")
        check_seed(seed)
        shape = tuple(int(s) for s in input_shape)
        if public is not None and (not isinstance(public, torch.Tensor) or tuple(public.shape[1:]) != shape
                                   or public.shape[0] < 2):
            got = tuple(public.shape) if isinstance(public, torch.Tensor) else type(public).__name__
            raise GradleakError(f"public must be a tensor of at least 2 images of shape (N, {', '.join(map(str, shape))})"
                                f", got {got}")
        server = self._build(copy.deepcopy(model), shape, seed=seed, public=public)
        first_layer(server.model, shape)  # the model it sends takes the client's inputs
        return server

    @abstractmethod
    def _build(self, model: nn.Module, input_shape: tuple[int, ...], *, seed: int,
               public: torch.Tensor | None) -> ServerModel:
        """Build from `model`, a copy the behaviour may change."""


class Honest(ServerBehaviour):
    """The honest-but-curious server: it sends the global model unchanged (levels 0-4)."""

    name = "honest"
    malicious = False

    def _build(self, model, input_shape, *, seed, public) -> ServerModel:
        return ServerModel(model=model, spec=self.spec(), assumption=Assumption.BASIC)


def first_layer(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, nn.Module]:
    """(name, module) of the first parameterized module an input reaches in a forward pass."""
    probe = copy.deepcopy(model).eval()  # hooks stay off the caller's model
    modules = dict(model.named_modules())
    calls: list[str] = []
    for name, module in probe.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            module.register_forward_pre_hook(lambda mod, args, _name=name: calls.append(_name))
    first = next(model.parameters(), None)
    try:
        with torch.no_grad():
            probe(torch.zeros(1, *input_shape, device=None if first is None else first.device,
                              dtype=None if first is None else first.dtype))
    except Exception as exc:  # a model that cannot take this input: say which input
        raise GradleakError(f"the model does not take inputs of shape {tuple(input_shape)}: {exc}") from exc
    if not calls:
        raise GradleakError("the model has no parameterized layer the input reaches")
    return calls[0], modules[calls[0]]


__all__ = ["Honest", "ServerBehaviour", "ServerModel", "first_layer"]
