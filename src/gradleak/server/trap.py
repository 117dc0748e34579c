"""Trap weights: a fully connected first layer whose units each fire for few inputs
(Boenisch et al., "When the Curious Abandon Honesty", EuroS&P 2023).

Threat model: a malicious server (assumption level 5) that keeps the architecture and
sets the first layer's parameters. Our construction (written from the method's
description, not the authors' code): each unit gets a random direction w_i (the row's
original norm) and a bias at the (1 - `fire`) quantile of w_i . x, estimated as a
Gaussian fitted to public images (or, without them, x with i.i.d. N(0, 1) entries), so
each unit fires for about a `fire` share of inputs. A unit that fired for exactly one
sample has weight gradient d_b x_b and bias gradient d_b: their ratio is that sample
(`gradleak.attacks.trap`). With U units and a batch of n, a sample is trapped alone by
at least one unit with probability about 1 - (1 - p (1 - p)^(n-1))^U (`trap_expected`,
units treated as independent), largest at p = 1/n.
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.checks import check_number, check_positive_int
from gradleak.devices import generator
from gradleak.errors import GradleakError
from gradleak.records import Assumption
from gradleak.server.base import ServerBehaviour, ServerModel, first_layer


def trap_expected(units: int, fire: float, num_samples: int) -> float:
    """The expected fraction of a batch trapped alone by at least one of `units` units."""
    alone = fire * (1.0 - fire) ** (num_samples - 1)
    return 1.0 - (1.0 - alone) ** units


class Trap(ServerBehaviour):
    """Trap weights in the model's first (fully connected) layer.

    Args:
        fire: the share of inputs each unit fires for (about 1 / batch size is best).
        public: the registered data set the biases are estimated from (None: assume
            i.i.d. N(0, 1) inputs, the normalized data's marginals).
        support: each unit looks at this many random input entries (None: all); sparse
            units fire less for the same images than dense ones, whose projections all
            follow an image's overall contrast.
    """

    name = "trap"
    _spec_fields = ("fire", "public", "support")

    def __init__(self, *, fire: float = 0.01, public: str | None = None, support: int | None = None) -> None:
        self.fire = check_number("fire", fire, low=0, high=0.5, low_open=True, high_open=True)
        if public is not None and not isinstance(public, str):
            raise GradleakError(f"public must be the name of a data set or None, got {public!r}")
        self.public = self.public_data = public
        self.support = None if support is None else check_positive_int("support", support)

    def _build(self, model, input_shape, *, seed, public) -> ServerModel:
        name, layer = first_layer(model, input_shape)
        size = 1
        for s in input_shape:
            size *= s
        if not isinstance(layer, nn.Linear) or layer.bias is None or layer.in_features != size:
            kind = type(layer).__name__ + (" without bias" if isinstance(layer, nn.Linear) and layer.bias is None
                                           else "")
            raise GradleakError(f"trap weights need a fully connected first layer with a bias that takes the "
                                f"flattened input ({size} features); layer {name!r} is {kind}")
        if self.public is not None and public is None:
            raise GradleakError(f"trap server estimates its biases from data set {self.public!r}: pass its images "
                                "as public=")
        weight = layer.weight
        gen = generator(weight.device, seed)
        rows = torch.randn(weight.shape, generator=gen, device=weight.device, dtype=torch.float64)
        if self.support is not None and self.support < size:  # each unit sees `support` random inputs
            keep = torch.rand(weight.shape, generator=gen, device=weight.device).argsort(1)[:, : self.support]
            rows = torch.zeros_like(rows).scatter_(1, keep, rows.gather(1, keep))
        rows = rows / rows.norm(dim=1, keepdim=True) * weight.detach().double().norm(dim=1, keepdim=True)
        z = torch.special.ndtri(torch.tensor(1.0 - self.fire, dtype=torch.float64))
        if public is None:
            cut = rows.norm(dim=1) * z
        else:
            values = public.to(weight.device, torch.float64).flatten(1) @ rows.T
            cut = values.mean(0) + values.std(0) * z
        with torch.no_grad():
            layer.weight.copy_(rows)
            layer.bias.copy_(-cut)
        source = "gaussian assumed" if public is None else f"gaussian fitted to {public.shape[0]} public images"
        return ServerModel(model=model, spec=self.spec(), assumption=Assumption.MALICIOUS, layer=name,
                           notes=(f"trap: {layer.out_features} units of layer {name!r} each firing for "
                                  f"{self.fire:g} of inputs ({source})",))


__all__ = ["Trap", "trap_expected"]
