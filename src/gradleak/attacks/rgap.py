"""R-GAP's closed-form steps (Zhu & Blaschko, ICLR 2021), as plain functions.

Threat model: honest-but-curious server with the model and one sample's gradient under
the logistic loss on one logit, labels in {-1, +1}, bias-free layers and invertible
activations (LeakyReLU, identity). The recursion runs from the top:

1. last layer (1 x n): <dW, W> = k u with k = dl/du, and with t = y u this is
   f(t) = -t / (1 + e^t), invertible for t < 0 (a misclassified sample); k = -y / (1 + e^t);
2. a fully connected layer z = W x: dW = k x^T, so x solves the least squares of the
   gradient rows k_i x = dW_i and the forward rows W x = z (when z is known);
3. the pre-activation below is act^-1(x) and k_below = (W^T k) * act'(z_below).

This module holds steps 1-3 for fully connected layers; convolutions (the padded
Toeplitz systems), the attack class, rank analysis and the CLI are issue 3's remaining
work.
"""

from __future__ import annotations

import math

import torch

from gradleak.errors import GradleakError


def logit_from_last_layer(weight_grad: torch.Tensor, weight: torch.Tensor, label: int) -> tuple[float, float]:
    """(u, k): the logit and dl/du from the last layer's weight gradient and weights (one logit).

    Raises when <dW, W> <= 0: the sample is classified correctly (t = y u >= 0), where f is
    not invertible; R-GAP's demos pick the wrong label on purpose.
    """
    if label not in (-1, 1):
        raise GradleakError(f"label must be -1 or +1 for the logistic loss, got {label!r}")
    s = float((weight_grad.double() * weight.double()).sum())
    if not s > 0:
        raise GradleakError(f"<dW, W> of the last layer is {s:.3g} <= 0: the sample is classified correctly "
                            "(y * logit >= 0) and R-GAP's last-layer step is not invertible there")

    def f(t: float) -> float:  # -t / (1 + e^t), decreasing on t < 0 from +inf to 0
        return -t / (1.0 + math.exp(t))

    low = -1.0
    while f(low) < s:
        low *= 2.0
    high = 0.0
    for _ in range(200):  # bisection to double precision
        mid = 0.5 * (low + high)
        if f(mid) > s:
            low = mid
        else:
            high = mid
    t = 0.5 * (low + high)
    return t * label, -label / (1.0 + math.exp(t))


def invert_linear_input(weight_grad: torch.Tensor, k: torch.Tensor, weight: torch.Tensor | None = None,
                        output: torch.Tensor | None = None) -> torch.Tensor:
    """x from dW = k x^T (least squares over the gradient rows), plus W x = output when given."""
    k = k.reshape(-1)
    kk = (k * k).sum()
    rhs = weight_grad.t() @ k  # sum_i k_i dW_i
    if weight is None or output is None:
        if not kk > 0:
            raise GradleakError("every entry of k is zero: the gradient carries no information on this input")
        return rhs / kk
    normal = weight.t() @ weight + kk * torch.eye(weight.shape[1], dtype=weight.dtype)
    return torch.linalg.solve(normal, rhs + weight.t() @ output.reshape(-1))


def leaky_relu_inverse(x: torch.Tensor, slope: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, act'(z)) for x = LeakyReLU(z) with 0 < slope (slope 1: identity)."""
    if not slope > 0:
        raise GradleakError(f"slope must be > 0 for an invertible activation, got {slope!r}")
    positive = x >= 0
    z = torch.where(positive, x, x / slope)
    return z, torch.where(positive, torch.ones_like(x), torch.full_like(x, slope))


def invert_fully_connected(weights: list[torch.Tensor], grads: list[torch.Tensor], label: int,
                           slope: float) -> torch.Tensor:
    """The input of a bias-free stack Linear -> act -> ... -> Linear(n, 1) from one sample's gradients.

    `weights[i]` and `grads[i]` are layer i's (out, in) weight and weight gradient, bottom
    to top; every hidden layer is followed by LeakyReLU(`slope`).
    """
    if len(weights) != len(grads) or not weights or weights[-1].shape[0] != 1:
        raise GradleakError("need matching weights and gradients, the last layer with one output")
    _, k_top = logit_from_last_layer(grads[-1], weights[-1], label)
    k = torch.tensor([k_top], dtype=grads[-1].dtype)
    x = invert_linear_input(grads[-1], k)
    for i in range(len(weights) - 2, -1, -1):
        z, slope_of = leaky_relu_inverse(x, slope)
        k = (weights[i + 1].t() @ k) * slope_of
        x = invert_linear_input(grads[i], k, weights[i], z)
    return x
