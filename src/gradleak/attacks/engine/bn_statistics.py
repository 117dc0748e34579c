"""BatchNorm-statistics prior and group consistency (Yin et al., CVPR 2021, "See through gradients").

The prior: for every BatchNorm layer l, the distance between the per-channel batch mean
and (biased) variance of the reconstruction's features entering l and a target,
    R_BN(x) = sum_l ||mu_l(x) - mu_l*||_2 + ||var_l(x) - var_l*||_2,
added to any optimization attack's objective with a weight. Where the target comes from
is an assumption, recorded in the result (`BN_SOURCES`):

- "client": the client's own batch statistics (level 4, Yin's setting: a FedSGD client in
  train mode whose BN buffers reach the server; `ClientUpdate.bn_statistics`).
- "client-running": the same statistics derived from what a FedAvg client that sends its
  whole state shares, its updated running buffers (`ClientUpdate.bn_running`), with the BN
  momentum and the number of local steps (level 4; `statistics_from_update`): exact after
  one step, the momentum-weighted mean of the steps' batch statistics after several.
- "running": the model's running statistics, which the server holds anyway (level 0; the
  realistic setting of Huang et al., NeurIPS 2021).
- "proxy": statistics of public proxy data of the same kind pushed through the model
  (level 2, the data distribution).

Group consistency: with several restarts optimized together, after a warm-up each
restart is pulled towards the restarts' mean image (Yin et al. register the images to
each other first; we do not, so restarts that land shifted average to a blur).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from gradleak.errors import GradleakError
from gradleak.records import Assumption, ClientUpdate

BN_SOURCES = {
    "client": Assumption.BN_STATISTICS,
    "client-running": Assumption.BN_STATISTICS,
    "running": Assumption.BASIC,
    "proxy": Assumption.DATA_DISTRIBUTION,
}

Stats = tuple[tuple[torch.Tensor, torch.Tensor], ...]


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def batch_statistics(model: nn.Module, x: torch.Tensor) -> Stats:
    """Per-BN-layer (mean, biased variance) over all but the channel axis of the features
    entering each layer, for input `x`, differentiable w.r.t. `x`. The model runs in its
    own mode on cloned buffers (its running statistics are not updated)."""
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(_m, inputs, _out):
        h = inputs[0]
        dims = [d for d in range(h.dim()) if d != 1]
        stats.append((h.mean(dims), h.var(dims, unbiased=False)))

    handles = [m.register_forward_hook(hook) for m in bn_layers(model)]
    try:
        params = dict(model.named_parameters())
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        functional_call(model, (params, buffers), (x,))
    finally:
        for h in handles:
            h.remove()
    return tuple(stats)


def running_statistics(model: nn.Module) -> Stats:
    """The model's running (mean, variance) of every BN layer."""
    layers = bn_layers(model)
    if any(m.running_mean is None for m in layers):
        raise GradleakError("bn_source 'running' needs BatchNorm layers that track running statistics")
    return tuple((m.running_mean.detach(), m.running_var.detach()) for m in layers)


def statistics_from_running(before: torch.Tensor, after: torch.Tensor, momentum: float, steps: int = 1,
                            count: int | None = None, variance: bool = False) -> torch.Tensor:
    """The batch statistic a client's running buffer absorbed over `steps` train-mode
    forward passes with BN `momentum` (PyTorch's convention: new = (1 - m) old + m batch):
    exact for one step; for several, the momentum-weighted mean of the steps' statistics.
    For a variance, `count` (elements per channel, batch x height x width) turns PyTorch's
    unbiased running estimate back into the biased batch variance the prior compares."""
    if not 0 < momentum <= 1 or steps < 1:
        raise GradleakError(f"momentum must be in (0, 1] and steps >= 1, got {momentum!r} and {steps!r}")
    keep = (1 - momentum) ** steps
    value = (after - keep * before) / (1 - keep)
    if variance:
        if count is None or count < 2:
            raise GradleakError(f"count must be the number of elements per channel (>= 2), got {count!r}")
        value = value * (count - 1) / count
    return value


def statistics_from_update(model: nn.Module, update: ClientUpdate, input_shape: tuple[int, ...]) -> Stats:
    """The client's batch statistics per BN layer, derived from its updated running buffers
    (`update.bn_running`) and `model`'s (the round's start) over the update's local steps."""
    if not update.bn_running:
        raise GradleakError("bn_source 'client-running' needs the client's updated BN running statistics "
                            "(ClientUpdate.bn_running, shared by a FedAvg client that sends its state), "
                            "but the update carries none")
    layers = bn_layers(model)
    if any(m.momentum is None or m.running_mean is None for m in layers):
        raise GradleakError("bn_source 'client-running' needs BatchNorm layers with running statistics and a "
                            "momentum (not the cumulative average, momentum=None)")
    spatial = _spatial_sizes(model, input_shape)
    n = update.num_samples
    b = n if update.training.batch_size is None else min(update.training.batch_size, n)
    steps = update.local_steps
    return tuple(
        (statistics_from_running(m.running_mean, mean, m.momentum, steps),
         statistics_from_running(m.running_var, var, m.momentum, steps, count=b * size, variance=True))
        for m, (mean, var), size in zip(layers, update.bn_running, spatial))


def _spatial_sizes(model: nn.Module, input_shape: tuple[int, ...]) -> list[int]:
    """Elements per channel and sample of the features entering each BN layer."""
    sizes: list[int] = []
    handles = [m.register_forward_hook(lambda _m, inputs, _o: sizes.append(inputs[0][0, 0].numel()))
               for m in bn_layers(model)]
    try:
        device = next(model.parameters()).device
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        with torch.no_grad():
            functional_call(model, (dict(model.named_parameters()), buffers),
                            (torch.zeros(2, *input_shape, device=device),))
    finally:
        for h in handles:
            h.remove()
    return sizes


def bn_distance(stats: Stats, target: Stats) -> torch.Tensor:
    """Yin et al.'s R_BN: summed L2 norms of the mean and variance differences."""
    return sum((m - mt).norm() + (v - vt).norm() for (m, v), (mt, vt) in zip(stats, target))


@dataclass(frozen=True)
class BNTarget:
    source: str
    statistics: Stats
    assumption: Assumption


def bn_target(source: str, model: nn.Module, update: ClientUpdate, proxy: torch.Tensor | None = None,
              input_shape: tuple[int, ...] | None = None) -> BNTarget:
    """The target statistics from `source` (a key of `BN_SOURCES`) for `model` (the attacker's
    copy, in the client's mode); "client-running" needs the samples' `input_shape`."""
    if source not in BN_SOURCES:
        raise GradleakError(f"bn_source must be one of {', '.join(BN_SOURCES)}, got {source!r}")
    layers = bn_layers(model)
    if not layers:
        raise GradleakError("the BN-statistics prior needs a model with BatchNorm layers; this one has none")
    device = next(model.parameters()).device
    if source == "client":
        if not update.bn_statistics:
            raise GradleakError("bn_source 'client' needs the client's BN statistics, but the update carries none")
        stats = tuple((m.detach().to(device), v.detach().to(device)) for m, v in update.bn_statistics)
    elif source == "client-running":
        if input_shape is None:
            raise GradleakError("bn_source 'client-running' needs the samples' input_shape")
        stats = tuple((m.detach().to(device), v.detach().to(device))
                      for m, v in statistics_from_update(model, update, tuple(input_shape)))
    elif source == "running":
        stats = running_statistics(model)
    else:
        if proxy is None or not isinstance(proxy, torch.Tensor) or proxy.dim() < 2 or proxy.shape[0] < 2:
            raise GradleakError(f"bn_source 'proxy' needs bn_proxy, a tensor of at least 2 public samples in "
                                f"model space, got {type(proxy).__name__}")
        with torch.no_grad():
            stats = tuple((m.detach(), v.detach()) for m, v in
                          batch_statistics(model.train(), proxy.to(device=device, dtype=torch.float32)))
        model.train(update.model_mode == "train")
    if len(stats) != len(layers):
        raise GradleakError(f"the BN target has {len(stats)} layers, the model {len(layers)} BatchNorm layers")
    return BNTarget(source, stats, BN_SOURCES[source])


def bn_prior(model: nn.Module, target: BNTarget, weight: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (B, *shape) -> weight * R_BN(x) against the target."""

    def prior(x: torch.Tensor) -> torch.Tensor:
        return weight * bn_distance(batch_statistics(model, x), target.statistics)

    return prior


def combine_priors(*priors):
    """The sum of the given priors (None entries skipped); None when none is left."""
    kept = [p for p in priors if p is not None]
    if not kept:
        return None
    if len(kept) == 1:
        return kept[0]
    return lambda x: sum(p(x) for p in kept)


def group_consistency(objective: Callable[[torch.Tensor], torch.Tensor], data: Callable[[torch.Tensor], torch.Tensor],
                      weight: float, start: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """`objective` plus, from its `start`-th call on (Adam: one call a step), `weight` times
    each row's mean squared distance to the rows' (detached) mean image. Weight 0: `objective`."""
    if weight == 0:
        return objective
    calls = [0]

    def grouped(rows: torch.Tensor) -> torch.Tensor:
        losses = objective(rows)
        calls[0] += 1
        if calls[0] > start and rows.shape[0] > 1:
            x = data(rows)
            center = x.detach().mean(0, keepdim=True)
            losses = losses + weight * ((x - center) ** 2).reshape(rows.shape[0], -1).mean(1)
        return losses

    return grouped
