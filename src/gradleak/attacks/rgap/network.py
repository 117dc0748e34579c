"""R-GAP's walk over a network (Zhu & Blaschko, ICLR 2021): which layers it can invert,
and the recursion from the top layer down to the input (`recursion` holds each step)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.rgap.recursion import (
    invert_conv_input,
    invert_linear_input,
    leaky_relu_inverse,
    logit_from_last_layer,
)
from gradleak.errors import GradleakError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RGAPLayer:
    """One weight layer of a network R-GAP can walk, with what follows it."""

    name: str
    module: nn.Module  # nn.Conv2d or nn.Linear, bias-free
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    slope: float | None  # the LeakyReLU after it; None: identity


WHY_NOT = {
    nn.ReLU: "ReLU zeroes every negative pre-activation, so they cannot be recovered; use LeakyReLU",
    nn.BatchNorm1d: "batch norm adds a shift (a bias) and couples the samples through batch statistics",
    nn.BatchNorm2d: "batch norm adds a shift (a bias) and couples the samples through batch statistics",
    nn.MaxPool2d: "pooling discards the entries it does not pick",
    nn.AvgPool2d: "pooling sums entries into fewer outputs; its input is not identifiable",
    nn.AdaptiveAvgPool2d: "pooling sums entries into fewer outputs; its input is not identifiable",
    nn.Dropout: "dropout removes units at random",
}


def _refuse(name: str, module: nn.Module) -> str:
    why = next((text for kind, text in WHY_NOT.items() if isinstance(module, kind)),
               "only bias-free Conv2d and Linear layers, LeakyReLU and identity are supported")
    return f"layer {name!r} ({type(module).__name__}): {why}"


def rgap_layers(model: nn.Module, input_shape: tuple[int, ...], *, logits: str = "one") -> list[RGAPLayer]:
    """The weight layers of a chain R-GAP can invert, bottom to top; raises naming the first misfit.

    `logits`: "one" (the logistic loss: the last layer has one output), "many" (cross-
    entropy: two or more) or "any" (rank analysis). Checked before any work is done.
    """
    problems: dict[str, str] = {}  # the first layer of each kind of misfit, in forward order
    for name, module in model.named_modules():
        if list(module.children()) or (isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) == 0):
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if module.bias is not None:
                problems.setdefault("bias", f"layer {name!r} ({type(module).__name__}) has a bias, and the recursion "
                                    "needs bias-free layers (a biased first layer: try analytic-fc)")
            elif isinstance(module, nn.Conv2d) and (module.groups != 1 or module.dilation != (1, 1)
                                                    or module.padding_mode != "zeros" or isinstance(module.padding, str)):
                problems.setdefault("conv", f"layer {name!r} (Conv2d) is not a plain zero-padded convolution "
                                    "(groups 1, dilation 1, numeric padding)")
        elif isinstance(module, nn.LeakyReLU) and not module.negative_slope > 0:
            problems.setdefault("ReLU", _refuse(name, nn.ReLU()))
        elif not isinstance(module, (nn.LeakyReLU, nn.Flatten, nn.Identity)):
            problems.setdefault(type(module).__name__, _refuse(name, module))
    if not isinstance(model, nn.Sequential) or any(list(m.children()) for m in model):
        problems["chain"] = (f"{type(model).__name__} is not one flat nn.Sequential, so a layer's output may feed "
                             "more than the next layer (skip connections break the recursion)")
    if problems:
        raise GradleakError("R-GAP cannot invert this model: " + "; ".join(problems.values()))
    layers: list[list] = []
    x = torch.zeros(1, *input_shape, dtype=next(model.parameters()).dtype, device=next(model.parameters()).device)
    for name, module in model.named_children():
        if isinstance(module, nn.LeakyReLU):
            if not layers or layers[-1][4] is not None:
                raise GradleakError(f"R-GAP cannot invert layer {name!r}: an activation must follow a weight layer")
            layers[-1][4] = float(module.negative_slope)
        with torch.no_grad():
            y = module(x)
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            layers.append([name, module, tuple(x.shape[1:]), tuple(y.shape[1:]), None])
        x = y
    if not layers or not isinstance(layers[-1][1], nn.Linear) or layers[-1][4] is not None:
        raise GradleakError("R-GAP needs the network to end in a bias-free nn.Linear with nothing after it")
    outputs = layers[-1][1].out_features
    if logits == "one" and outputs != 1:
        raise GradleakError(f"the logistic loss needs one logit, the last layer {layers[-1][0]!r} has {outputs} "
                            "outputs (use the cross-entropy variant with a known or recoverable label)")
    if logits == "many" and outputs < 2:
        raise GradleakError(f"cross-entropy needs two or more logits, the last layer {layers[-1][0]!r} has one")
    return [RGAPLayer(*layer) for layer in layers]


def invert_layers(layers: list[RGAPLayer], grads: list[torch.Tensor], k_top: torch.Tensor,
                  logits_top: torch.Tensor | None = None, *, tol: float = 1e-12, max_iter: int = 20000,
                  max_residual: float | None = None) -> torch.Tensor:
    """The input (flattened, float64) from the weight gradients (bottom to top) and dl/dz of the top.

    `logits_top` (the top layer's outputs, when known) adds its forward rows. With
    `max_residual`, a convolution whose least squares leaves a larger relative residual
    raises `Inconsistent` at once (how a wrong label candidate is dropped cheaply).
    """
    if len(grads) != len(layers):
        raise GradleakError(f"got {len(grads)} gradients for {len(layers)} weight layers")
    dtype = torch.float64
    weights = [layer.module.weight.detach().to(dtype) for layer in layers]
    grads = [g.detach().to(dtype) for g in grads]
    k = k_top.detach().to(dtype).reshape(-1)
    top = None if logits_top is None else logits_top.detach().to(dtype).reshape(-1)
    x = invert_linear_input(grads[-1], k, None if top is None else weights[-1], top)
    for i in range(len(layers) - 2, -1, -1):
        layer, upper = layers[i], layers[i + 1]
        x_up = x.reshape(layer.output_shape)  # the activation and a flatten keep the element order
        if isinstance(upper.module, nn.Linear):
            dl_dx = (weights[i + 1].t() @ k.reshape(-1)).reshape(layer.output_shape)
        else:
            dl_dx = torch.nn.grad.conv2d_input((1, *upper.input_shape), weights[i + 1], k.reshape(1, *upper.output_shape),
                                               stride=upper.module.stride, padding=upper.module.padding)
            dl_dx = dl_dx[0].reshape(layer.output_shape)
        z, deriv = leaky_relu_inverse(x_up, layer.slope if layer.slope is not None else 1.0)
        k = dl_dx * deriv
        if isinstance(layer.module, nn.Linear):
            x = invert_linear_input(grads[i], k.reshape(-1), weights[i], z.reshape(-1))
        else:
            x = invert_conv_input(weights[i], grads[i], k, z, layer.input_shape, stride=layer.module.stride,
                                  padding=layer.module.padding, tol=tol, max_iter=max_iter,
                                  max_residual=max_residual).to(dtype)
    return x.reshape(-1)


def invert_network(model: nn.Module, grads: list[torch.Tensor], label: float,
                   input_shape: tuple[int, ...]) -> torch.Tensor:
    """One sample's input (float64) from its gradients (parameter order) under the logistic loss."""
    layers = rgap_layers(model, input_shape, logits="one")
    u, k = logit_from_last_layer(grads[-1], layers[-1].module.weight, label)
    x = invert_layers(layers, list(grads), torch.tensor([k], dtype=torch.float64, device="cpu"),
                      torch.tensor([u], dtype=torch.float64, device="cpu"))
    return x.reshape(input_shape)
