"""Sparsification of the shared update: top-k and random pruning.

Top-k keeps the largest-magnitude entries and zeroes the rest: the gradient pruning
defense of DLG (Zhu et al., NeurIPS 2019) and the compression of Deep Gradient
Compression (Lin et al., ICLR 2018). It is deterministic, so the attacker that knows it
applies the same top-k to its prediction. Random pruning zeroes each entry
independently (the Bayes paper's pruning, Balunovic et al., ICLR 2022); an attacker
that knows the client's seed regenerates the masks (the known-mask setting), one that
does not models each entry as a kept/pruned mixture.
Threat model: the server sees only the sparsified update.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from gradleak.defenses.base import Defense, NotModeled, check_fraction, check_seed
from gradleak.defenses.conditionals import Elementwise, Masked, Transformed
from gradleak.devices import generator as seeded_generator
from gradleak.errors import GradleakError

SCOPES = ("tensor", "global")


def keep_count(keep: float, numel: int) -> int:
    """How many entries top-k keeps out of `numel`: the nearest integer to keep * numel
    (halves up), at least 1 and at most numel."""
    return min(numel, max(1, math.floor(keep * numel + 0.5)))


def _top_mask(flat: torch.Tensor, k: int) -> torch.Tensor:
    """(R, n) bool: True at the k largest |entries| of each row (ties as torch.topk breaks them)."""
    idx = flat.detach().abs().topk(k, dim=1).indices
    return torch.zeros(flat.shape, dtype=torch.bool, device=flat.device).scatter_(1, idx, True)


def top_k(stacked: Sequence[torch.Tensor], keep: float, scope: str = "tensor") -> tuple[torch.Tensor, ...]:
    """Top-k of each restart of stacked tensors (R, *shape): per tensor, or over all
    tensors of a restart together ("global"). Differentiable through the kept values."""
    if keep >= 1:
        return tuple(stacked)
    flats = [p.reshape(p.shape[0], -1) for p in stacked]
    if scope == "global":
        total = sum(f.shape[1] for f in flats)
        if total == 0:
            return tuple(stacked)
        masks = _top_mask(torch.cat([f.detach() for f in flats], 1), keep_count(keep, total))
        masks = masks.split([f.shape[1] for f in flats], dim=1)
    else:  # an empty tensor keeps nothing
        masks = [_top_mask(f, keep_count(keep, f.shape[1])) if f.shape[1] else f.bool() for f in flats]
    return tuple(torch.where(m.reshape(p.shape), p, 0.0) for p, m in zip(stacked, masks))


def prune_masks(shapes: Sequence[torch.Size], rate: float, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Keep-masks (bool), one per shape in order, each entry kept with probability 1 - rate.
    Drawn in float64 so the keep probability is 1 - rate to well below any test's noise."""
    return tuple(torch.rand(tuple(s), generator=generator, dtype=torch.float64, device=generator.device) >= rate
                 for s in shapes)


def random_prune(tensors: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.where(m.to(t.device), t, 0.0) for t, m in zip(tensors, masks))


class TopK(Defense):
    """Keep the `keep` fraction of largest-magnitude entries; zero the rest.

    Args:
        keep: fraction in (0, 1]; exactly k = max(1, round(keep * n)) entries are kept
            (rounding halves up), n the entries of each tensor ("tensor") or of the
            whole update ("global"). keep=1 is the identity.
        scope: "tensor" or "global".
    """

    name = "topk"
    _spec_fields = ("keep", "scope")

    def __init__(self, keep: float = 0.1, scope: str = "tensor") -> None:
        self.keep = check_fraction("keep", keep)
        if scope not in SCOPES:
            raise GradleakError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        self.scope = scope

    def _tensors(self, tensors, generator, client):
        if self.keep >= 1:
            return tensors
        # the update is one restart: the same function the attacker's model applies
        return tuple(t[0] for t in top_k([t.unsqueeze(0) for t in tensors], self.keep, self.scope))

    def conditional(self, after, *, seed=None):
        if self.keep >= 1:
            return after
        return Transformed(functools.partial(top_k, keep=self.keep, scope=self.scope), after)


class RandomPrune(Defense):
    """Zero each entry independently with probability `rate` in [0, 1) (rate=0: identity).

    The masks come from the transform's seed; `masks(shapes, seed)` regenerates them for
    an attacker that knows the seed.
    """

    name = "prune"
    _spec_fields = ("rate",)

    def __init__(self, rate: float = 0.5) -> None:
        self.rate = check_fraction("rate", rate, low_open=False, high_open=True)

    def masks(self, shapes: Sequence[torch.Size], seed: int, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, ...]:
        """The keep-masks `transform(update, seed=seed)` uses for tensors of `shapes` on `device`."""
        # Defense.transform seeds its generator the same way, on the update's device
        return prune_masks(shapes, self.rate, seeded_generator(device, check_seed(seed)))

    def _tensors(self, tensors, generator, client):
        if self.rate == 0:
            return tensors
        return random_prune(tensors, prune_masks([t.shape for t in tensors], self.rate, generator))

    def conditional(self, after, *, seed=None):
        if self.rate == 0:
            return after
        if not isinstance(after, Elementwise):
            raise NotModeled(f"random pruning followed by {after!r} has no conditional here; "
                             "only elementwise noise (none, gaussian, laplacian) may follow it")
        # cached: the attack scores the same shapes at every step
        mask_fn = None if seed is None else functools.lru_cache(maxsize=2)(functools.partial(self.masks, seed=seed))
        return Masked(keep=1 - self.rate, inner=after, mask_fn=mask_fn)
