"""Soteria: prune the representation's gradient in one fully connected layer (Sun et al., CVPR 2021).

Threat model: an honest-but-curious server reconstructs the client's batch from its
update (DLG, Inverting Gradients). The gradient of a fully connected layer's weight is
the outer product of the output gradient and the layer's input, the representation r,
so it leaks r; Soteria zeroes the weight-gradient columns of the representation units
whose perturbation moves the reconstruction most. It is not robust to an attacker who
knows it: dropping the defended layer from the objective breaks it (Balunovic et al.,
ICLR 2022).

The score, as the authors' code computes it (the paper prunes the units with the largest
||r_i|| / ||dr_i/dX||; the code, equivalently, the smallest inverse, offset by 0.1):

    score_i = sum_n ||d r_{n,i} / d x_n||_2 / (|r_{n,i}| + 0.1)

The units with the smallest scores are pruned. Two deliberate differences from that code:
|r| instead of r in the denominator (identical after ReLU or sigmoid, the paper's
settings; for signed representations it keeps the score a positive ratio of magnitudes
and avoids a zero denominator), and exactly round(rate * d) units are pruned (halves
rounded up, at most d - 1; ties broken by unit index) instead of those strictly below
`np.percentile(scores, 100 * rate)`, whose count varies with interpolation and ties.
The input gradient of unit i is that of sum_n r_{n,i}, as in the authors' code: per
sample exact in eval mode; in train mode BatchNorm couples the samples of the batch.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
from torch import nn

from gradleak.defenses.base import ClientBatch, Defense, check_fraction
from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate

log = logging.getLogger(__name__)

EPSILON = 0.1  # the authors' offset added to the representation's magnitude
_CHUNK = 64  # representation units differentiated per batched backward pass


def defended_layer(model: nn.Module, layer: str | None) -> str:
    """The name of the defended nn.Linear: `layer`, or the first Linear in `named_modules()` order."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    listed = ", ".join(repr(n) for n in linears) or "(none)"
    if layer is None and linears:
        return linears[0]
    if layer not in linears:
        modules = dict(model.named_modules())
        found = f"a {type(modules[layer]).__name__}" if isinstance(layer, str) and layer in modules else "not a module"
        raise GradleakError(f"soteria: layer must name an nn.Linear of the model; got {layer!r} ({found}); "
                            f"Linear layers: {listed}")
    return layer


def representation_scores(model: nn.Module, layer: str | None, images: torch.Tensor, mode: str = "eval",
                          *, seed: int = 0) -> torch.Tensor:
    """Soteria's score of each input unit of `layer` (shape (d,)); small scores are pruned.

    Runs a copy of `model` in `mode`; `seed` drives dropout in train mode (the global RNG
    is left as it was).
    """
    if mode not in ("train", "eval"):
        raise GradleakError(f"soteria: mode must be 'train' or 'eval'; got {mode!r}")
    name = defended_layer(model, layer)
    work = copy.deepcopy(model).train(mode == "train")
    for p in work.parameters():
        p.requires_grad_(False)
    captured: list[torch.Tensor] = []
    handle = work.get_submodule(name).register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0]))
    x = images.detach().clone().requires_grad_(True)
    try:
        with torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
            torch.manual_seed(seed)
            work(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise GradleakError(f"soteria: layer {name!r} must run exactly once per forward pass; it ran {len(captured)} times")
    r = captured[0]
    if not r.requires_grad:
        raise GradleakError(f"soteria: the input of layer {name!r} does not depend on the images")
    if r.dim() != 2 or r.shape[0] != x.shape[0]:
        raise GradleakError(f"soteria: layer {name!r} must see a (batch, features) input; got shape {tuple(r.shape)}")
    n, d = r.shape
    norms = torch.empty(n, d, dtype=r.dtype, device=r.device)
    for start in range(0, d, _CHUNK):
        units = torch.arange(start, min(start + _CHUNK, d), device=r.device)
        # one backward per unit, vmapped: row j seeds d(sum_n r[n, units[j]]) / dx
        seeds = torch.zeros(len(units), n, d, dtype=r.dtype, device=r.device)
        seeds[torch.arange(len(units), device=r.device), :, units] = 1
        (grads,) = torch.autograd.grad(r, x, seeds, retain_graph=True, is_grads_batched=True)
        norms[:, units] = grads.flatten(2).norm(dim=2).T.to(r.dtype)
    return (norms / (r.detach().abs() + EPSILON)).sum(0)


def pruned_count(rate: float, units: int) -> int:
    """round(rate * units), halves up, at most units - 1 (rate < 1 always keeps a unit)."""
    return max(0, min(math.floor(rate * units + 0.5), units - 1))


def soteria_mask(scores: torch.Tensor, rate: float) -> torch.Tensor:
    """Keep-mask (True = kept) over the units: the `pruned_count` smallest scores are dropped."""
    rate = check_fraction("rate", rate, low_open=False, high_open=True)
    if scores.dim() != 1 or scores.numel() < 1:
        raise GradleakError(f"soteria: scores must be a non-empty 1-D tensor; got shape {tuple(scores.shape)}")
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    order = torch.sort(scores, stable=True).indices
    keep[order[: pruned_count(rate, scores.numel())]] = False
    return keep


class Soteria(Defense):
    """Zero the defended Linear's weight-update columns for the `rate` least sensitive units."""

    name = "soteria"
    needs_client = True
    _spec_fields = ("rate", "layer")

    def __init__(self, rate: float = 0.6, layer: str | None = None) -> None:
        self.rate = check_fraction("rate", rate, low_open=False, high_open=True)
        self.layer = _layer_name(layer)

    def params(self) -> dict[str, object]:
        # layer=None is left out: "None" in a spec would read back as a layer name
        return {"rate": self.rate} if self.layer is None else {"rate": self.rate, "layer": self.layer}

    def transform(self, update: ClientUpdate, *, seed: int = 0, client: ClientBatch | None = None) -> ClientUpdate:
        # the tensors are located by the model's trainable-parameter names: they must be the update's
        if client is not None and tuple(update.names) != _trainable_names(client.model):
            raise GradleakError("soteria: the update's tensor names do not match the trainable parameters "
                                "of client.model; pass the model the update was computed with")
        return super().transform(update, seed=seed, client=client)

    def _tensors(self, tensors: tuple[torch.Tensor, ...], generator: torch.Generator,
                 client: ClientBatch | None) -> tuple[torch.Tensor, ...]:
        if client is None:  # Defense.transform refuses this first; kept for direct callers
            raise GradleakError("soteria works on the client's batch: pass client=ClientBatch(...)")
        name = defended_layer(client.model, self.layer)
        weight = f"{name}.weight" if name else "weight"
        names = _trainable_names(client.model)
        if weight not in names:
            raise GradleakError(f"soteria: the weight of layer {name!r} is not in the update (frozen?); "
                                f"update tensors: {', '.join(names)}")
        index = names.index(weight)
        units = tensors[index].shape[-1]
        if pruned_count(self.rate, units) == 0:
            return tensors
        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator, device=generator.device))
        scores = representation_scores(client.model, name, client.images, client.model_mode, seed=seed)
        if scores.numel() != units:
            raise GradleakError(f"soteria: layer {name!r} sees {scores.numel()} features but its update has "
                                f"{units} columns")
        keep = soteria_mask(scores, self.rate).to(tensors[index].device)
        log.debug("soteria: pruned %d of %d columns of %s", int((~keep).sum()), units, weight)
        out = list(tensors)
        out[index] = tensors[index].masked_fill(~keep, 0)
        return tuple(out)


def _layer_name(layer: object) -> str | None:
    # a spec's "layer=5" or "layer=7.1" (nn.Sequential names) arrives parsed as a number
    if isinstance(layer, bool) or not (layer is None or isinstance(layer, (str, int, float))):
        raise GradleakError(f"soteria: layer must be a module name (str) or None; got {layer!r}")
    if isinstance(layer, float):
        if not math.isfinite(layer):
            raise GradleakError(f"soteria: layer must be a module name (str) or None; got {layer!r}")
        return str(int(layer)) if layer.is_integer() else repr(layer)
    return None if layer is None else str(layer)


def _trainable_names(model: nn.Module) -> tuple[str, ...]:
    return tuple(n for n, p in model.named_parameters() if p.requires_grad)
