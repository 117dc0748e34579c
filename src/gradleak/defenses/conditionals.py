"""The attacker's models of a defense: p(observed update | clean update).

The Bayes-optimal attack (Balunovic et al., ICLR 2022) maximizes log p(g | x) + log p(x);
p(g | x) is the defense's conditional, evaluated at the clean update the attacker
predicts for its guess x. Each conditional here returns the negative log-likelihood of
the observed tensors for a stack of R predictions (one per restart): predicted tensors
are (R, *shape), observed ones (*shape), the result (R,), up to an additive constant.

Elementwise noise models (`Identity`, `Gaussian`, `Laplace`) also give per-entry log
densities, which pruning mixes: with the keep-mask unknown each entry is a mixture of
"kept" (q) and "pruned" (1 - q).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Tensors = Sequence[torch.Tensor]


def _sum_rest(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


class Conditional(ABC):
    """-log p(observed | predicted clean update), up to an additive constant."""

    @abstractmethod
    def nll(self, predicted: Tensors, observed: Tensors) -> torch.Tensor:
        """(R,) for predicted tensors (R, *shape) and observed tensors (*shape)."""

    def __call__(self, predicted: Tensors, observed: Tensors) -> torch.Tensor:
        return self.nll(predicted, observed)


class Elementwise(Conditional):
    """Independent noise on every entry: observed = predicted + noise."""

    @abstractmethod
    def log_density(self, residual: torch.Tensor) -> torch.Tensor:
        """Entrywise log density of the noise at `residual`, without its normalizing
        constant: a float32 objective would lose its small changes next to it, and both
        terms of a pruning mixture share it."""

    def nll(self, predicted: Tensors, observed: Tensors) -> torch.Tensor:
        return -sum(_sum_rest(self.log_density(o - p)) for p, o in zip(predicted, observed))


@dataclass(frozen=True)
class Gaussian(Elementwise):
    """N(0, sigma^2) on every entry: the squared L2 distance / (2 sigma^2)."""

    sigma: float

    def log_density(self, residual: torch.Tensor) -> torch.Tensor:
        return -0.5 * (residual / self.sigma) ** 2


@dataclass(frozen=True)
class Laplace(Elementwise):
    """Laplace(0, b) on every entry: the L1 distance / b.

    `delta` > 0 replaces |r| by the pseudo-Huber sqrt(r^2 + delta^2) - delta (quadratic
    within delta of 0, |r| - delta far from it): an optimizer's smoothing of the same
    density, not another noise model. L-BFGS needs it: its curvature pairs and line
    search assume a smooth objective, and |r| has a kink at every matched entry."""

    b: float
    delta: float = 0.0

    def log_density(self, residual: torch.Tensor) -> torch.Tensor:
        if self.delta > 0:
            return -(torch.sqrt(residual**2 + self.delta**2) - self.delta) / self.b
        return -residual.abs() / self.b


@dataclass(frozen=True)
class Identity(Gaussian):
    """No defense. The update is exact, which has no density; the attacker's model is a
    unit Gaussian, i.e. the plain L2 attack (the prior weights are tuned against it)."""

    sigma: float = 1.0


@dataclass(frozen=True)
class Masked(Conditional):
    """Random pruning (each entry kept with probability `keep`) before `inner` noise.

    Masks known (the Bayes paper's known-mask setting): the kept entries are scored
    under `inner`, the pruned ones carry only noise. Unknown: every entry is the mixture
    keep * p(o | g) + (1 - keep) * p(o | 0).

    The masks are given either as `masks` (bool tensors, one per update tensor) or as
    `mask_fn`, called with the observed tensors' shapes: a defense's `conditional` does
    not see the update, so a seeded pruning defense hands over how to regenerate its
    masks rather than the masks themselves.
    """

    keep: float
    inner: Elementwise
    masks: tuple[torch.Tensor, ...] | None = None
    mask_fn: Callable[..., tuple[torch.Tensor, ...]] | None = None  # (shapes, device) -> masks

    def masks_for(self, shapes: Sequence[torch.Size], device: torch.device | str = "cpu"
                  ) -> tuple[torch.Tensor, ...] | None:
        """The keep-masks for tensors of `shapes`, or None when the attacker does not know them."""
        if self.masks is not None:
            return tuple(self.masks)
        if self.mask_fn is not None:
            return tuple(self.mask_fn(tuple(torch.Size(s) for s in shapes), device=torch.device(device)))
        return None

    def nll(self, predicted: Tensors, observed: Tensors) -> torch.Tensor:
        masks = self.masks_for([o.shape for o in observed], observed[0].device if observed else "cpu")
        if masks is not None:
            kept = [torch.where(m.to(p.device).bool(), p, 0.0) for p, m in zip(predicted, masks)]
            return self.inner.nll(kept, observed)
        if self.keep >= 1:
            return self.inner.nll(predicted, observed)
        total = 0
        for p, o in zip(predicted, observed):
            kept = math.log(self.keep) + self.inner.log_density(o - p)
            pruned = math.log1p(-self.keep) + self.inner.log_density(o).expand_as(kept)
            total = total - _sum_rest(torch.logaddexp(kept, pruned))
        return total


@dataclass(frozen=True)
class Transformed(Conditional):
    """A deterministic defense (clipping, top-k) applied to the prediction before `inner`.

    `fn` maps the stacked predictions (R, *shape) per tensor to what the client would
    share; it must treat every restart separately.
    """

    fn: Callable[[Tensors], Tensors]
    inner: Conditional

    def nll(self, predicted: Tensors, observed: Tensors) -> torch.Tensor:
        return self.inner.nll(self.fn(predicted), observed)


@dataclass(frozen=True)
class SignAgreement(Conditional):
    """signSGD: each observed sign is modelled as sign(g + logistic noise) with the noise
    scale proportional to the tensor's mean |g|, so p(s | g) = sigmoid(s g / mean|g|).
    Invariant to the scale of g, as the shared signs are."""

    def nll(self, predicted: Tensors, observed: Tensors) -> torch.Tensor:
        total = 0
        for p, o in zip(predicted, observed):
            flat = p.reshape(p.shape[0], -1)
            scale = flat.abs().mean(1, keepdim=True) + 1e-12
            total = total - F.logsigmoid(o.sign().reshape(1, -1) * flat / scale).sum(1)
        return total


@dataclass(frozen=True)
class QuantizedGaussian(Conditional):
    """QSGD with `levels` levels: the rounding is unbiased with per-entry variance at
    most step^2 / 4, step = ||g|| / levels per tensor; modelled as Gaussian noise with
    sigma = step / 2. The step is read from the prediction's own norm."""

    levels: int

    def nll(self, predicted: Tensors, observed: Tensors) -> torch.Tensor:
        total = 0
        for p, o in zip(predicted, observed):
            flat = p.reshape(p.shape[0], -1)
            sigma = flat.norm(dim=1, keepdim=True) / (2 * self.levels) + 1e-12
            r = (o.reshape(1, -1) - flat) / sigma
            total = total + (0.5 * r**2 + sigma.log()).sum(1)
        return total


def smoothed(conditional: Conditional, fraction: float) -> Conditional:
    """`conditional` with every `Laplace(b)` in it smoothed at delta = fraction * b
    (through `Masked` and `Transformed`); fraction 0 returns it unchanged."""
    import dataclasses

    if fraction == 0:
        return conditional
    if isinstance(conditional, Laplace):
        return dataclasses.replace(conditional, delta=fraction * conditional.b)
    if isinstance(conditional, (Masked, Transformed)):
        return dataclasses.replace(conditional, inner=smoothed(conditional.inner, fraction))
    return conditional


def gaussianized(conditional: Conditional) -> Conditional:
    """`conditional` with every `Laplace(b)` in it replaced by the Gaussian of the same
    variance (sigma = b sqrt 2), through `Masked` and `Transformed`: the smooth twin an
    optimizer can start on (the Bayes attack's warm-up)."""
    import dataclasses

    if isinstance(conditional, Laplace):
        return Gaussian(conditional.b * math.sqrt(2))
    if isinstance(conditional, (Masked, Transformed)):
        return dataclasses.replace(conditional, inner=gaussianized(conditional.inner))
    return conditional
