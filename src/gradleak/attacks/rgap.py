"""R-GAP's closed-form steps (Zhu & Blaschko, ICLR 2021), as plain functions.

Threat model: honest-but-curious server with the model and one sample's gradient under
the logistic loss on one logit, labels in {-1, +1}, bias-free layers and invertible
activations (LeakyReLU, identity). The recursion runs from the top:

1. last layer (1 x n): <dW, W> = k u with k = dl/du, and with t = y u this is
   f(t) = -t / (1 + e^t), invertible for t < 0 (a misclassified sample); k = -y / (1 + e^t);
2. a fully connected layer z = W x: dW = k x^T, so x solves the least squares of the
   gradient rows k_i x = dW_i and the forward rows W x = z (when z is known);
3. the pre-activation below is act^-1(x) and k_below = (W^T k) * act'(z_below).

A convolution's input solves the same kind of least squares (gradient rows and forward
rows, padding eliminated), matrix-free. Beyond the paper: a network ending in C logits
under cross-entropy, where k = softmax(z) - e_y is recovered from the last layer's
rank-one gradient (`softmax_top`). The attack class is `gradleak.attacks.rgap_attack`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.errors import GradleakError

log = logging.getLogger(__name__)


def logit_from_last_layer(weight_grad: torch.Tensor, weight: torch.Tensor, label: float) -> tuple[float, float]:
    """(u, k): the logit and dl/du from the last layer's weight gradient and weights (one logit).

    Raises when <dW, W> <= 0: the sample is classified correctly (t = y u >= 0), where f is
    not invertible; R-GAP's demos pick the wrong label on purpose. For a batch the paper
    passes the mean label in [-1, 1] (nonzero) and recovers one combined input.
    """
    if isinstance(label, bool) or not isinstance(label, (int, float)) or not (-1 <= label <= 1) or label == 0:
        raise GradleakError(f"label must be -1 or +1 (or a nonzero batch mean in [-1, 1]) for the logistic loss, "
                            f"got {label!r}")
    s = float((weight_grad.detach().double() * weight.detach().double()).sum())
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
    return t / label, -label / (1.0 + math.exp(t))


def softmax_top(weight_grad: torch.Tensor, weight: torch.Tensor,
                label: int | None) -> tuple[list[torch.Tensor], int]:
    """([k, ...], y): dl/dz of a last layer z = W x with C >= 2 logits under cross-entropy, one sample.

    dW = k x^T is rank one, so k = s u for its leading left singular vector u and an
    unknown scalar s; k = softmax(z) - e_y has one negative entry, k_y, which fixes the
    sign of s and, for C >= 3, the label (the entry whose sign differs from the rest).
    With b = sigma W v, z = b / s, and |s| solves 1 - softmax(b / s)_y = |s| |u_y|: a
    one-dimensional root, found by bracketing on a log grid and bisection. Every root
    whose residual over all C entries is at rounding level is returned, best first:
    with C = 2 a correctly classified sample has two (the logistic case's ambiguity), and
    the caller keeps the one whose reconstruction reproduces the gradient. Exact up to
    rounding unless the softmax is saturated (k near 0: a confidently correct sample).
    """
    g, w = weight_grad.detach().double(), weight.detach().double()
    if g.dim() != 2 or g.shape[0] < 2:
        raise GradleakError(f"softmax_top needs a (C, n) weight gradient with C >= 2, got {tuple(g.shape)}")
    u_mat, sig, vh = torch.linalg.svd(g, full_matrices=False)
    if not sig[0] > 0:
        raise GradleakError("the last layer's gradient is zero: nothing to invert")
    u, v = u_mat[:, 0], vh[0]
    if label is None and len(u) == 2:
        raise GradleakError("cannot tell the label from the last layer's gradient with 2 classes (both signs fit); "
                            "pass it, or try both")
    if label is None:
        negative, positive = (u < 0).nonzero().flatten(), (u > 0).nonzero().flatten()
        if len(negative) == 1 and len(positive) == len(u) - 1:
            label = int(negative[0])
        elif len(positive) == 1 and len(negative) == len(u) - 1:
            label = int(positive[0])
        else:
            raise GradleakError(f"cannot tell the label from the last layer's gradient ({len(u)} classes); "
                                "pass the labels (with 2 classes both signs fit)")
    if not 0 <= label < len(u):
        raise GradleakError(f"label must be a class index in [0, {len(u) - 1}], got {label!r}")
    sign = -1.0 if u[label] > 0 else 1.0  # k_y = p_y - 1 < 0
    b = sig[0] * (w @ v)
    onehot = torch.zeros_like(u)
    onehot[label] = 1.0

    def residual_y(a: float) -> float:
        return 1.0 - float(torch.softmax(b / (sign * a), 0)[label]) - a * float(u[label].abs())

    def residual(a: float) -> float:
        return float((sign * a * u - torch.softmax(b / (sign * a), 0) + onehot).norm())

    grid = [10.0 ** (e / 8) for e in range(-160, 41)]  # |s| from 1e-20 to 1e5
    values = [residual_y(a) for a in grid]
    roots = []
    for lo, hi, f_lo, f_hi in zip(grid, grid[1:], values, values[1:]):
        if f_lo == 0:
            roots.append(lo)
        elif f_lo * f_hi < 0:
            for _ in range(200):
                mid = math.sqrt(lo * hi)
                if mid in (lo, hi):
                    break
                if residual_y(mid) * f_lo > 0:
                    lo = mid
                else:
                    hi = mid
            roots.append(math.sqrt(lo * hi))
    if not roots:
        raise GradleakError("no scale of k fits the softmax: the gradient is not one sample's cross-entropy gradient")
    roots.sort(key=residual)
    fits = [a for a in roots if residual(a) <= 1e-6] or roots[:1]
    return [sign * a * u for a in fits], label


def invert_linear_input(weight_grad: torch.Tensor, k: torch.Tensor, weight: torch.Tensor | None = None,
                        output: torch.Tensor | None = None) -> torch.Tensor:
    """x from dW = k x^T (least squares over the gradient rows), plus W x = output when given."""
    k = k.reshape(-1)
    scale = float(k.abs().max())
    if scale > 0 and weight is not None:  # balance gradient rows against forward rows (same equations)
        k, weight_grad = k / scale, weight_grad / scale
    kk = (k * k).sum()
    rhs = weight_grad.t() @ k  # sum_i k_i dW_i
    if weight is None or output is None:
        if not kk > 0:
            raise GradleakError("every entry of k is zero: the gradient carries no information on this input")
        return rhs / kk
    rhs = rhs + weight.t() @ output.reshape(-1)
    m, n = weight.shape
    if m < n and kk > 0:  # Woodbury: an m x m system instead of (kk I + W^T W), n x n, e.g. for a top logit
        inner = kk * torch.eye(m, dtype=weight.dtype) + weight @ weight.t()
        return (rhs - weight.t() @ torch.linalg.solve(inner, weight @ rhs)) / kk
    return torch.linalg.solve(weight.t() @ weight + kk * torch.eye(n, dtype=weight.dtype), rhs)


def leaky_relu_inverse(x: torch.Tensor, slope: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, act'(z)) for x = LeakyReLU(z) with 0 < slope (slope 1: identity)."""
    if not slope > 0:
        raise GradleakError(f"slope must be > 0 for an invertible activation, got {slope!r}")
    positive = x >= 0
    z = torch.where(positive, x, x / slope)
    return z, torch.where(positive, torch.ones_like(x), torch.full_like(x, slope))


class Inconsistent(GradleakError):
    """A layer's equations have no solution to within the asked residual (a wrong candidate k)."""


def invert_conv_input(conv_weight: torch.Tensor, weight_grad: torch.Tensor, k: torch.Tensor, output: torch.Tensor,
                      input_shape: tuple[int, int, int], *, stride: tuple[int, int], padding: tuple[int, int],
                      tol: float = 1e-12, max_iter: int = 20000, max_residual: float | None = None) -> torch.Tensor:
    """x (C, H, W) of a bias-free convolution from its weight gradient and its output.

    Rows: gradient rows dW[o, c, a, b] = sum k[o, p] x[c, patch p + (a, b)] and forward
    rows conv(x, W) = output; padded entries are not unknowns (the padding rows of the
    paper are eliminated). Solved matrix-free with LSQR: the operator and its adjoint are
    a convolution weight-gradient, a convolution and their transposes, so no Toeplitz
    matrix is ever formed (memory: a few copies of x, k and W). The gradient rows are
    divided by max|k| first: k is often 1e-3 of the forward rows' scale, and without that
    balance float32 gradients lose CNN6 from 114 to 32 dB.
    """
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, lsqr

    dtype = torch.float64
    w, g, kk, out = (t.detach().to(dtype) for t in (conv_weight, weight_grad, k, output))
    scale = float(kk.abs().max())
    if scale > 0:  # balance the gradient rows against the forward rows (same equations)
        g, kk = g / scale, kk / scale
    shape = (1, *input_shape)
    n_grad, n_fwd = w.numel(), out.numel()
    n = int(np.prod(input_shape))
    conv = dict(stride=stride, padding=padding)

    def forward(vec):
        x = torch.from_numpy(np.ascontiguousarray(vec, dtype=np.float64)).reshape(shape)
        rows_g = torch.nn.grad.conv2d_weight(x, w.shape, kk[None], **conv)
        rows_f = torch.nn.functional.conv2d(x, w, **conv)
        return torch.cat([rows_g.reshape(-1), rows_f.reshape(-1)]).numpy()

    def adjoint(vec):
        y = torch.from_numpy(np.ascontiguousarray(vec, dtype=np.float64))
        y_g, y_f = y[:n_grad].reshape(w.shape), y[n_grad:].reshape(1, *out.shape)
        x = torch.nn.grad.conv2d_input(shape, w, y_f, **conv) + torch.nn.grad.conv2d_input(shape, y_g, kk[None],
                                                                                           **conv)
        return x.reshape(-1).numpy()

    op = LinearOperator((n_grad + n_fwd, n), matvec=forward, rmatvec=adjoint, dtype=np.float64)
    rhs = torch.cat([g.reshape(-1), out.reshape(-1)]).numpy()
    solution, _, iterations, residual = lsqr(op, rhs, atol=tol, btol=tol, iter_lim=max_iter)[:4]
    relative = residual / max(float(np.linalg.norm(rhs)), 1e-300)
    log.debug("conv input %s: LSQR %d iterations, relative residual %.3g", input_shape, iterations, relative)
    if max_residual is not None and relative > max_residual:
        raise Inconsistent(f"the equations of the convolution with input {input_shape} leave a relative residual "
                           f"{relative:.3g} > {max_residual:g}")
    return torch.from_numpy(solution).reshape(input_shape).to(conv_weight.dtype)


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
    x = torch.zeros(1, *input_shape, dtype=next(model.parameters()).dtype)
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
    x = invert_layers(layers, list(grads), torch.tensor([k], dtype=torch.float64),
                      torch.tensor([u], dtype=torch.float64))
    return x.reshape(input_shape)
