"""Class fishing: last-layer parameters that let one target class through
(Wen et al., "Fishing for User Data in Large-Batch Federated Learning via Gradient
Magnification", ICML 2022).

Threat model: a malicious server (assumption level 5) that keeps the architecture and
changes only the last (fully connected) layer. Our construction, from the method's
description: every non-target class's row and bias are zeroed, and the target's bias
lowered by `margin`, so the target's probability is about e^-margin for every input.
With cross-entropy, a sample of class y sends back to the features W^T (p - e_y); the
zeroed rows carry nothing and p_target is about 0, so only samples of the target class
send anything to the layers below: their gradient is that of -logit_target on the target
samples alone, whatever the batch. An existing attack (inverting gradients) on every
tensor but the last layer then recovers the target as if it had been alone
(`gradleak.attacks.fishing`). The client would see its model predict one of the other
classes uniformly: a visible change, if it looks.
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.checks import check_int, check_positive_float
from gradleak.errors import GradleakError
from gradleak.records import Assumption
from gradleak.server.base import ServerBehaviour, ServerModel


def last_layer(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, nn.Module]:
    """(name, module) of the last parameterized module an input passes through."""
    calls: list[str] = []
    handles = [m.register_forward_pre_hook(lambda mod, args, _name=n: calls.append(_name))
               for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    first = next(model.parameters(), None)
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=None if first is None else first.device,
                              dtype=None if first is None else first.dtype))
    finally:
        for h in handles:
            h.remove()
    if not calls:
        raise GradleakError("the model has no parameterized layer the input reaches")
    return calls[-1], dict(model.named_modules())[calls[-1]]


class Fishing(ServerBehaviour):
    """Class fishing on the model's last layer.

    Args:
        target: the class whose samples the server isolates.
        margin: how far the target's logit is lowered (its probability is about e^-margin).
    """

    name = "fishing"
    _spec_fields = ("target", "margin")

    def __init__(self, *, target: int = 0, margin: float = 20.0) -> None:
        self.target = check_int("target", target, low=0)
        self.margin = check_positive_float("margin", margin)

    def _build(self, model, input_shape, *, seed, public) -> ServerModel:
        name, layer = last_layer(model, input_shape)
        if not isinstance(layer, nn.Linear) or layer.bias is None:
            kind = type(layer).__name__ + (" without bias" if isinstance(layer, nn.Linear) else "")
            raise GradleakError(f"fishing changes a fully connected last layer with a bias; layer {name!r} is {kind}")
        if self.target >= layer.out_features:
            raise GradleakError(f"target must be a class index below {layer.out_features} (layer {name!r}'s outputs), "
                                f"got {self.target}")
        with torch.no_grad():
            keep_w, keep_b = layer.weight[self.target].clone(), layer.bias[self.target].clone()
            layer.weight.zero_()
            layer.bias.zero_()
            layer.weight[self.target] = keep_w
            layer.bias[self.target] = keep_b - self.margin
        return ServerModel(model=model, spec=self.spec(), assumption=Assumption.MALICIOUS, layer=name,
                           target=self.target,
                           notes=(f"fishing: class {self.target} isolated in layer {name!r}",))


__all__ = ["Fishing", "last_layer"]
