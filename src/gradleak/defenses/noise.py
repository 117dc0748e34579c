"""Additive noise on the shared update: Gaussian and Laplacian perturbation.

Gaussian noise is the perturbation of the SoK's Appendix C (Du et al.), stated as an
absolute sigma or as a noise multiplier times a clipping norm (the DP-SGD convention,
without the per-sample clipping: use `normclip` before it, or the DP-SGD client mode
for the real mechanism). Laplacian noise Laplace(0, b) is the Bayes paper's second
defense (Balunovic et al., ICLR 2022). Noise is added to every entry of every tensor.
Threat model: the server sees only the noisy update.
"""

from __future__ import annotations

import torch

from gradleak.defenses.base import Defense, NotModeled, check_positive
from gradleak.defenses.conditionals import Gaussian, Identity, Laplace
from gradleak.errors import GradleakError


def gaussian_noise(tensors, sigma: float, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    return tuple(t + sigma * torch.randn(t.shape, generator=generator, dtype=t.dtype, device=generator.device)
                 for t in tensors)


def laplacian_noise(tensors, b: float, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    # inverse CDF of Laplace(0, b) on u ~ U(-1/2, 1/2); the open interval avoids log(0)
    out = []
    for t in tensors:
        u = torch.rand(t.shape, generator=generator, dtype=torch.float64, device=generator.device)
        u = u.clamp(1e-12, 1 - 1e-12) - 0.5
        out.append(t + (-b * u.sign() * torch.log1p(-2 * u.abs())).to(t.dtype))
    return tuple(out)


class GaussianNoise(Defense):
    """Add N(0, sigma^2) to every entry.

    Args:
        sigma: absolute standard deviation; or give both
        multiplier: the noise multiplier z and
        clip: the clipping norm C, for sigma = z * C.
    """

    name = "gaussian"

    def __init__(self, sigma: float | None = None, multiplier: float | None = None, clip: float | None = None) -> None:
        if sigma is not None and (multiplier is not None or clip is not None):
            raise GradleakError("gaussian takes sigma, or multiplier and clip, not both")
        if sigma is None:
            if multiplier is None or clip is None:
                raise GradleakError(f"gaussian needs sigma, or multiplier and clip; got multiplier={multiplier!r}, "
                                    f"clip={clip!r}")
            self.multiplier = check_positive("multiplier", multiplier, allow_zero=True)
            self.clip = check_positive("clip", clip)
            self.sigma = self.multiplier * self.clip
            self._spec_fields = ("multiplier", "clip")
        else:
            self.sigma = check_positive("sigma", sigma, allow_zero=True)
            self._spec_fields = ("sigma",)

    def _tensors(self, tensors, generator, client):
        return tensors if self.sigma == 0 else gaussian_noise(tensors, self.sigma, generator)

    def conditional(self, after, *, seed=None):
        if self.sigma == 0:
            return after
        if type(after) is Identity:
            return Gaussian(self.sigma)
        if isinstance(after, Gaussian):  # independent Gaussians add their variances
            return Gaussian((self.sigma**2 + after.sigma**2) ** 0.5)
        raise NotModeled(f"gaussian noise followed by {after!r} has no conditional here")


class LaplacianNoise(Defense):
    """Add Laplace(0, b) to every entry (standard deviation b * sqrt(2))."""

    name = "laplacian"
    _spec_fields = ("b",)

    def __init__(self, b: float = 0.1) -> None:
        self.b = check_positive("b", b, allow_zero=True)

    def _tensors(self, tensors, generator, client):
        return tensors if self.b == 0 else laplacian_noise(tensors, self.b, generator)

    def conditional(self, after, *, seed=None):
        if self.b == 0:
            return after
        if type(after) is Identity:
            return Laplace(self.b)
        raise NotModeled(f"laplacian noise followed by {after!r} has no conditional here")
