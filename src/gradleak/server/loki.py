"""Model inconsistency through secure aggregation (LOKI; Zhao et al., IEEE S&P 2024).

Threat model: a malicious server (assumption level 5) under secure aggregation: it sees
only the sum of the clients' updates, but it may send each client a different model,
which secure aggregation does not check. Our construction (written from the method's
description, not the authors' code): an imprint block (`gradleak.server.imprint`, Fowl
et al.) of `clients * bins` bin units in front of the model, every client's copy with
its own `bins` rows live (the imprint's collinear rows and quantile thresholds) and the
other clients' rows disabled (zero weights, bias -1: they never fire, so their update is
exactly zero). In the sum, rows `j*bins:(j+1)*bins` hold client j's update alone, and
the imprint read-out of those rows gives client j's samples, each attributed to its
client (`gradleak.attacks.loki`). The model behind the block is the global model, the
same for every client.

`build` returns the model of client `client`; `build_clients` returns a `LokiModels`
from which every client's model is built on demand (N models of N * bins rows each
need not be held at once).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.checks import check_non_negative_int, check_positive_int
from gradleak.errors import GradleakError
from gradleak.records import Assumption
from gradleak.server.base import ServerModel
from gradleak.server.imprint import Imprint, ImprintBlock, Imprinted

DISABLED_BIAS = -1.0  # a disabled row: zero weights and this bias never fire


@dataclass(frozen=True)
class LokiModels:
    """What a LOKI server sends: client j's model is `model(j)`; its live rows of layer
    `layer` are `rows(j)`; `thresholds` (bins,) are every client's bin thresholds c_i."""

    base: nn.Module
    input_shape: tuple[int, ...]
    clients: int
    bins: int
    direction: torch.Tensor  # w, the measurement (unit norm)
    thresholds: torch.Tensor
    back: torch.Tensor  # u * scale / (bins * gain)
    gain: float
    spec: str
    layer: str = "imprint.bins"

    def rows(self, client: int) -> slice:
        j = check_non_negative_int("client", client)
        if j >= self.clients:
            raise GradleakError(f"client must be below clients ({self.clients}), got {client}")
        return slice(j * self.bins, (j + 1) * self.bins)

    def model(self, client: int) -> nn.Module:
        """Client `client`'s model (a fresh module: the imprint block with only its rows live)."""
        rows = self.rows(client)
        first = next(self.base.parameters(), None)
        device = torch.device("cpu") if first is None else first.device
        dtype = torch.float32 if first is None else first.dtype
        block = ImprintBlock(self.input_shape, self.clients * self.bins, back="shared").to(device, dtype)
        with torch.no_grad():
            block.bins.weight.zero_()
            block.bins.bias.fill_(DISABLED_BIAS)
            block.bins.weight[rows] = (self.gain * self.direction).to(device, dtype)
            block.bins.bias[rows] = (-self.gain * self.thresholds).to(device, dtype)
            block.back.weight.copy_(self.back.to(device, dtype)[:, None])
            block.back.bias.zero_()
        return Imprinted(block, copy.deepcopy(self.base))

    def server_model(self, client: int) -> ServerModel:
        return ServerModel(model=self.model(client), spec=self.spec, assumption=Assumption.MALICIOUS,
                           layer=self.layer, probabilities=(1.0 / self.bins,) * self.bins,
                           notes=(f"loki: client {client} of {self.clients}, its own {self.bins} imprint bins "
                                  f"(rows {self.rows(client).start}-{self.rows(client).stop - 1}), the others "
                                  "disabled",))


class Loki(Imprint):
    """An imprint block whose bins are each client's alone (LOKI-style model inconsistency).

    Args:
        clients: number of clients N the server addresses (the block has N * bins rows).
        bins: bin units per client.
        client: whose model `build` returns.
        measure, estimate, public, loc, std, scale, gain: as the `imprint` server.
    """

    name = "loki"
    _spec_fields = ("clients", "bins", "client", "measure", "estimate", "public", "loc", "std", "scale", "gain")

    def __init__(self, *, clients: int = 10, bins: int = 64, client: int = 0, measure: str = "random",
                 estimate: str = "quantiles", public: str | None = None, loc: float = 0.0, std: float = 1.0,
                 scale: float = 1.0, gain: float = 1.0) -> None:
        super().__init__(bins=bins, measure=measure, estimate=estimate, public=public, loc=loc, std=std,
                         scale=scale, back="shared", gain=gain)
        self.clients = check_positive_int("clients", clients)
        self.client = check_non_negative_int("client", client)
        if self.client >= self.clients:
            raise GradleakError(f"client must be below clients ({self.clients}), got {client!r}")

    def build_clients(self, model: nn.Module, input_shape: tuple[int, ...], *, seed: int = 0,
                      public: torch.Tensor | None = None) -> LokiModels:
        """Every client's model, built on demand (`model` is not modified)."""
        self.build(model, input_shape, seed=seed, public=public)  # validates the arguments
        return self._models(copy.deepcopy(model), tuple(int(s) for s in input_shape), seed, public)

    def _models(self, model, input_shape, seed, public) -> LokiModels:
        w, c, u = self._design(model, input_shape, seed, public)
        back = u * self.scale / (self.bins * self.gain)
        return LokiModels(base=model, input_shape=input_shape, clients=self.clients, bins=self.bins, direction=w,
                          thresholds=c, back=back, gain=self.gain, spec=self.spec())

    def _build(self, model, input_shape, *, seed, public) -> ServerModel:
        return self._models(model, input_shape, seed, public).server_model(self.client)


__all__ = ["DISABLED_BIAS", "Loki", "LokiModels"]
