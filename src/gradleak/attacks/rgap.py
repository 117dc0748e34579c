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
    scale = float(k.abs().max())
    if scale > 0 and weight is not None:  # balance gradient rows against forward rows (same equations)
        k, weight_grad = k / scale, weight_grad / scale
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


def invert_conv_input(conv_weight: torch.Tensor, weight_grad: torch.Tensor, k: torch.Tensor, output: torch.Tensor,
                      input_shape: tuple[int, int, int], *, stride: tuple[int, int], padding: tuple[int, int],
                      tol: float = 1e-12, max_iter: int = 20000) -> torch.Tensor:
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
    solution = lsqr(op, rhs, atol=tol, btol=tol, iter_lim=max_iter)[0]
    return torch.from_numpy(solution).reshape(input_shape).to(conv_weight.dtype)


def _layers(model: torch.nn.Module, input_shape: tuple[int, ...]):
    """[(name, module, input shape, activation slope or None, output shape)] for R-GAP's networks."""
    from torch import nn

    seq = list(model.named_children()) if isinstance(model, nn.Sequential) else None
    if seq is None:
        raise GradleakError("R-GAP walks an nn.Sequential of Conv2d/Linear layers, LeakyReLU and Flatten; "
                            f"got {type(model).__name__}")
    layers = []
    x = torch.zeros(1, *input_shape, dtype=next(model.parameters()).dtype)
    for name, module in seq:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if module.bias is not None:
                raise GradleakError(f"layer {name!r} ({type(module).__name__}) has a bias: R-GAP needs bias-free layers")
            if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.dilation != (1, 1)
                                                  or module.padding_mode != "zeros" or isinstance(module.padding, str)):
                raise GradleakError(f"layer {name!r}: only plain zero-padded convolutions are supported")
            with torch.no_grad():
                out_shape = tuple(module(x).shape[1:])
            layers.append([name, module, tuple(x.shape[1:]), None, out_shape])
        elif isinstance(module, nn.LeakyReLU):
            if not layers or layers[-1][3] is not None:
                raise GradleakError(f"layer {name!r}: an activation must follow a Conv2d or Linear layer")
            layers[-1][3] = float(module.negative_slope)
        elif isinstance(module, (nn.Flatten, nn.Identity)):
            pass
        else:
            raise GradleakError(f"layer {name!r} ({type(module).__name__}) is not invertible in closed form: R-GAP "
                                "supports Conv2d and Linear without bias, LeakyReLU and identity")
        with torch.no_grad():
            x = module(x)
    last = layers[-1][1] if layers else None
    if not isinstance(last, nn.Linear) or last.out_features != 1 or layers[-1][3] is not None:
        raise GradleakError("R-GAP needs the network to end in a linear layer with one logit (logistic loss)")
    return [tuple(layer) for layer in layers]


def invert_network(model: torch.nn.Module, grads: list[torch.Tensor], label: int,
                   input_shape: tuple[int, ...]) -> torch.Tensor:
    """One sample's input from its gradients (parameter order) under the logistic loss, top down."""
    from torch import nn

    layers = _layers(model, input_shape)
    if len(grads) != len(layers):
        raise GradleakError(f"got {len(grads)} gradients for {len(layers)} layers")
    dtype = torch.float64
    weights = [layer[1].weight.detach().to(dtype) for layer in layers]
    grads = [g.detach().to(dtype) for g in grads]
    _, k_top = logit_from_last_layer(grads[-1], weights[-1], label)
    k = torch.tensor([k_top], dtype=dtype)
    x = invert_linear_input(grads[-1], k)  # input of the last layer, flattened
    for i in range(len(layers) - 2, -1, -1):
        name, module, in_shape, slope, out_shape = layers[i]
        upper, upper_in = layers[i + 1][1], layers[i + 1][2]
        x_up = x.reshape(out_shape)  # the activation and a flatten keep the element order
        if isinstance(upper, nn.Linear):
            dl_dx = (weights[i + 1].t() @ k.reshape(-1)).reshape(out_shape)
        else:
            dl_dx = torch.nn.grad.conv2d_input((1, *upper_in), weights[i + 1], k[None], stride=upper.stride,
                                               padding=upper.padding)[0].reshape(out_shape)
        z, deriv = leaky_relu_inverse(x_up, slope if slope is not None else 1.0)
        k = dl_dx * deriv
        if isinstance(module, nn.Linear):
            x = invert_linear_input(grads[i], k.reshape(-1), weights[i], z.reshape(-1))
        else:
            x = invert_conv_input(weights[i], grads[i], k, z, in_shape, stride=module.stride, padding=module.padding)
    return x.reshape(input_shape)
