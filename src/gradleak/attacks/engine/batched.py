"""Per-restart parameter gradients of R restarts in one forward/backward pass.

Restarts are stacked along the batch dimension ([R*B, ...]) and run through the model
once with shared parameters, so the forward pass and the input gradients are single
large kernels. What sequential restarts get from autograd for free, the gradient of
restart r alone, is rebuilt per layer from the layer's input a and the gradient of
the loss at its output d (the per-sample-gradient construction of Opacus; see
Goodfellow 2015 and Bu et al. 2023 for the norm trick):

- materialized: dW_r = d_r^T a_r by one batched matrix product per layer (unfolded
  patches for convolutions), exact for any distance;
- inner products only, for distances that need <g_r, T> and ||g_r||^2 (cosine):
  <dW_r, T> = <d_r, layer(a_r; T)> is one shared-weight pass with the target as the
  weight, and ||dW_r||^2 is taken from Gram matrices of d and a when that is cheaper
  than forming dW_r (deep, spatially small layers), else from dW_r.

Supported parameterized layers: Linear, Conv1d/2d (groups 1, zero padding) and
BatchNorm1d/2d; in training mode batch norm uses each restart's own batch statistics,
as the client's model does. Anything else raises `NotBatchable` and the caller runs
its restarts one after another.
"""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.client.losses import client_loss
from gradleak.errors import GradleakError


class NotBatchable(GradleakError):
    """The model contains a layer the batched path cannot split into restarts."""


@dataclass(frozen=True)
class RestartGradients:
    """Per-restart gradient statistics for R restarts.

    `grads[i]` is the gradient of parameter i for every restart, shape (R, *shape), or
    None when only inner products were asked for; `dots` and `norms` are (R,) tensors
    holding sum_i <g_ri, T_i> and sum_i ||g_ri||^2; `target_norm` is sum_i ||T_i||^2.
    """

    grads: tuple[torch.Tensor, ...] | None
    dots: torch.Tensor
    norms: torch.Tensor
    target_norm: torch.Tensor  # sum_i ||T_i||^2, a scalar


_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def _bn_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm with per-restart statistics; records the normalized input when affine."""
    restarts = self._gradleak_restarts
    if self.training or self.running_mean is None:
        xr = x.reshape(restarts, -1, *x.shape[1:])
        dims = [1] + list(range(3, xr.dim()))
        mean = xr.mean(dims, keepdim=True)
        var = xr.var(dims, unbiased=False, keepdim=True)
        xhat = ((xr - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
    else:
        view = (1, -1) + (1,) * (x.dim() - 2)
        xhat = (x - self.running_mean.reshape(view)) * torch.rsqrt(self.running_var.reshape(view) + self.eps)
    if not self.affine:
        return xhat
    view = (1, -1) + (1,) * (x.dim() - 2)
    out = xhat * self.weight.reshape(view) + self.bias.reshape(view)
    self._gradleak_tape.append((self, xhat, out))
    return out


def _tap_hook(module: nn.Module, inputs, output):
    module._gradleak_tape.append((module, inputs[0], output))


class RestartBatcher:
    """Computes `RestartGradients` for stacked restarts on a private copy of `model`.

    Args:
        model: the attacker's model, already in the client's mode (it is copied).
        target: the observed update read as gradients, in `named_parameters` order of
            the trainable parameters.
        materialize: form every per-restart gradient (needed for L2/L1 distances);
            otherwise only inner products with `target` and squared norms.
    """

    def __init__(self, model: nn.Module, target: Sequence[torch.Tensor], *, materialize: bool,
                 loss: str = "cross-entropy") -> None:
        self.model = copy.deepcopy(model)
        self.loss = loss
        self.target = tuple(t.detach() for t in target)
        self.target_norm = sum((t.double() ** 2).sum() for t in self.target).to(self.target[0].dtype)
        self.materialize = materialize
        self.tape: list = []
        self.stat_modules: list[nn.Module] = []
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        owner: dict[int, tuple[nn.Module, str]] = {}
        for mod_name, module in self.model.named_modules():
            own = [(k, p) for k, p in module.named_parameters(recurse=False) if p.requires_grad]
            if isinstance(module, _BN) and not own:  # no parameters, but its statistics must stay per restart
                module.forward = types.MethodType(_bn_forward, module)
                module._gradleak_restarts = 1
                self.stat_modules.append(module)
                continue
            if not own:
                if getattr(module, "inplace", False):
                    module.inplace = False  # an in-place op would overwrite a recorded layer output
                continue
            if isinstance(module, _CONV):
                if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
                    raise NotBatchable(f"layer {mod_name!r}: grouped, non-zero-padded or 'same'-padded convolution")
                module.register_forward_hook(_tap_hook)
            elif isinstance(module, nn.Linear):
                module.register_forward_hook(_tap_hook)
            elif isinstance(module, _BN) and module.affine:
                module.forward = types.MethodType(_bn_forward, module)
            else:
                raise NotBatchable(f"layer {mod_name!r} ({type(module).__name__}) has parameters the batched "
                                   "path does not support")
            module._gradleak_tape = self.tape
            for k, p in own:
                owner[id(p)] = (module, k)
        self.slots = [owner[id(p)] for _, p in trainable]
        self.index = {(id(m), k): i for i, (m, k) in enumerate(self.slots)}
        if len(self.target) != len(self.slots):
            raise GradleakError(f"target has {len(self.target)} tensors, the model {len(self.slots)} parameters")

    def probe(self, batch: int, input_shape: tuple[int, ...]) -> None:
        """Raise `NotBatchable` now if a forward pass of 2 restarts of `batch` samples cannot be split."""
        for module in [m for m, _ in self.slots] + self.stat_modules:
            module._gradleak_restarts = 2
        self.tape.clear()
        with torch.no_grad():
            self.model(torch.zeros(2 * batch, *input_shape, device=self.target[0].device))
        calls = [id(m) for m, _, _ in self.tape]
        self.tape.clear()
        if len(set(calls)) != len(calls):
            raise NotBatchable("a parameterized layer is called more than once per forward pass")

    def __call__(self, x: torch.Tensor, targets: torch.Tensor, restarts: int) -> RestartGradients:
        """Gradients of each restart's mean loss; x is (R*B, ...), targets (R*B,) or (R*B, C)."""
        for module in [m for m, _ in self.slots] + self.stat_modules:
            module._gradleak_restarts = restarts
        self.tape.clear()
        batch = x.shape[0] // restarts
        out = self.model(x)
        calls = [(m, a, z) for m, a, z in self.tape]
        self.tape.clear()
        if len({id(m) for m, _, _ in calls}) != len(calls):
            raise NotBatchable("a parameterized layer is called more than once per forward pass")
        # sum over restarts of each restart's mean loss: d(loss)/d(output of r) is restart r's own
        loss = client_loss(self.loss, out, targets, reduction="sum") / batch
        deltas = torch.autograd.grad(loss, [z for _, _, z in calls], create_graph=True)
        grads: list[torch.Tensor | None] = [None] * len(self.slots)
        dots = x.new_zeros(restarts)
        norms = x.new_zeros(restarts)
        for (module, a, _), d in zip(calls, deltas):
            for key, stat in _layer_stats(module, a, d, restarts, self.target, self.index, self.materialize):
                i = self.index[(id(module), key)]
                if isinstance(stat, torch.Tensor):
                    grads[i] = stat
                    flat = stat.reshape(restarts, -1)
                    dots = dots + flat @ self.target[i].reshape(-1)
                    norms = norms + (flat * flat).sum(1)
                else:
                    dots = dots + stat[0]
                    norms = norms + stat[1]
        if self.materialize:  # a parameter the forward pass never reaches has a zero gradient
            grads = [torch.zeros(restarts, *self.target[i].shape, dtype=x.dtype, device=x.device) if g is None else g
                     for i, g in enumerate(grads)]
        return RestartGradients(tuple(grads) if self.materialize else None, dots, norms, self.target_norm)


def _layer_stats(module, a, d, restarts, target, index, materialize):
    """Yield (parameter key, per-restart gradient (R, *shape) or (dots, norms))."""
    def t(key):
        return target[index[(id(module), key)]]

    def has(key):
        p = getattr(module, key, None)
        return p is not None and p.requires_grad and (id(module), key) in index

    if isinstance(module, _BN):
        dims = [0, 2] + list(range(3, d.dim()))
        dr = d.reshape(restarts, -1, *d.shape[1:])
        ar = a.reshape(restarts, -1, *a.shape[1:])
        sum_dims = [1] + [i + 1 for i in dims[1:]]
        if has("weight"):
            yield "weight", (dr * ar).sum(sum_dims)
        if has("bias"):
            yield "bias", dr.sum(sum_dims)
        return
    # columns layout (R, features, rows): D is (R, O, B*L), A is (R, K, B*L); views when B == 1
    if isinstance(module, _CONV):
        out_ch = d.shape[1]
        dr = d.reshape(restarts, -1, out_ch, d[0, 0].numel())  # (R, B, O, L)
        cols = _unfold(module, a)  # (R*B, K, L)
        ar = cols.reshape(restarts, -1, cols.shape[1], cols.shape[2])  # (R, B, K, L)
        D = dr.transpose(1, 2).reshape(restarts, out_ch, -1)
        A = ar.transpose(1, 2).reshape(restarts, ar.shape[2], -1)
    else:
        out_ch = d.shape[-1]
        D = d.reshape(restarts, -1, out_ch).transpose(1, 2)
        A = a.reshape(restarts, -1, a.shape[-1]).transpose(1, 2)
    if has("bias"):
        yield "bias", D.sum(2)
    if not has("weight"):
        return
    weight = module.weight
    n_in, n_rows = A.shape[1], A.shape[2]
    ghost_cost = n_rows * n_rows * (out_ch + n_in)
    dense_cost = n_rows * out_ch * n_in
    if materialize or dense_cost <= ghost_cost:
        grad = torch.bmm(D, A.transpose(1, 2)).reshape(restarts, *weight.shape)
        if materialize:
            yield "weight", grad
        else:
            flat = grad.reshape(restarts, -1)
            yield "weight", (flat @ t("weight").reshape(-1), (flat * flat).sum(1))
        return
    # (R*rows, O) @ (O, K) is one matrix product; T @ A would copy T once per restart
    dots = ((D.transpose(1, 2) @ t("weight").reshape(out_ch, -1)) * A.transpose(1, 2)).sum((1, 2))
    gram_d = torch.bmm(D.transpose(1, 2), D)
    gram_a = torch.bmm(A.transpose(1, 2), A)
    yield "weight", (dots, (gram_d * gram_a).sum((1, 2)))


def _unfold(module, a: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Conv1d):
        cols = F.unfold(a.unsqueeze(2), (1, module.kernel_size[0]), dilation=(1, module.dilation[0]),
                        padding=(0, module.padding[0]), stride=(1, module.stride[0]))
        return cols
    return F.unfold(a, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride)
