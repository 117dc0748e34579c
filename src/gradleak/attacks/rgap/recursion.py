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
rank-one gradient (`softmax_top`). The attack class is `gradleak.attacks.rgap`.
"""

from __future__ import annotations

import logging
import math

import torch

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
        inner = kk * torch.eye(m, dtype=weight.dtype, device=weight.device) + weight @ weight.t()
        return (rhs - weight.t() @ torch.linalg.solve(inner, weight @ rhs)) / kk
    return torch.linalg.solve(weight.t() @ weight + kk * torch.eye(n, dtype=weight.dtype, device=weight.device), rhs)


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
