"""Quantization of the shared update: QSGD and signSGD.

QSGD (Alistarh et al., NeurIPS 2017) rounds every entry of a tensor v stochastically to
one of s + 1 levels of |v_i| / ||v||_2, keeping the sign, so that E[Q(v)] = v. signSGD
(Bernstein et al., ICML 2018) shares only signs, times one per-tensor scale.
Threat model: the server sees only the quantized update; it never sees QSGD's random
draws.
"""

from __future__ import annotations

from typing import Sequence

import torch

from gradleak.defenses.base import Defense, NotModeled
from gradleak.defenses.conditionals import Identity, QuantizedGaussian, SignAgreement
from gradleak.errors import GradleakError

MAX_BITS = 24  # 2^24 - 1 levels already rounds below float32 resolution
SIGN_SCALES = ("mean", "none")


def levels_for_bits(bits: int) -> int:
    """QSGD's s for `bits` bits per entry, not counting the sign: the level index
    l in {0, ..., s} takes 2^bits values, so s = 2^bits - 1 (bits=1: ternary)."""
    return 2**bits - 1


def qsgd(tensors: Sequence[torch.Tensor], levels: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Q(v)_i = ||v|| sign(v_i) xi_i / s per tensor, xi_i = l + Bernoulli(r - l) with
    r = s |v_i| / ||v||, l = floor(r): unbiased, on the grid ||v|| * {0, ..., s} / s."""
    out = []
    for t in tensors:
        # float64 so the grid and the rounding probabilities are not float32-rounded
        v = t.double()
        norm = v.norm()
        # drawn even for zero tensors: a stable stream
        u = torch.rand(t.shape, generator=generator, dtype=torch.float64, device=generator.device)
        if norm == 0:
            out.append(t.clone())
            continue
        r = levels * v.abs() / norm
        low = r.floor()
        xi = low + (u.to(t.device) < r - low).double()
        out.append((norm * v.sign() * xi / levels).to(t.dtype))
    return tuple(out)


def sign_sgd(tensors: Sequence[torch.Tensor], scale: str = "mean") -> tuple[torch.Tensor, ...]:
    """sign(v) times mean |v| ("mean": the tensor keeps its L1 norm) or times 1 ("none")."""
    if scale == "none":
        return tuple(t.sign() for t in tensors)
    return tuple(t.sign() * t.abs().mean() if t.numel() else t.clone() for t in tensors)


def _check_count(name: str, value: object, high: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1 and (high is None or value <= high)
    if not ok:
        raise GradleakError(f"{name} must be an integer in [1, {high if high else 'inf'}], got {value!r}")
    return int(value)


class QSGD(Defense):
    """Unbiased stochastic quantization per tensor (Alistarh et al., NeurIPS 2017).

    Give exactly one of
        bits: bits per entry besides the sign, 1..24; s = 2^bits - 1 levels
            (bits=1: ternary {-||v||, 0, +||v||}; the SoK's "QSGD with 1-4 bits")
        levels: s directly, >= 1.
    A zero tensor stays zero.
    """

    name = "qsgd"

    def __init__(self, bits: int | None = None, levels: int | None = None) -> None:
        if (bits is None) == (levels is None):
            raise GradleakError(f"qsgd takes exactly one of bits and levels, got bits={bits!r}, levels={levels!r}")
        if bits is not None:
            self.bits = _check_count("bits", bits, MAX_BITS)
            self.levels = levels_for_bits(self.bits)
            self._spec_fields = ("bits",)
        else:
            self.levels = _check_count("levels", levels)
            self._spec_fields = ("levels",)

    def _tensors(self, tensors, generator, client):
        return qsgd(tensors, self.levels, generator)

    def conditional(self, after, *, seed=None):
        if type(after) is Identity:
            return QuantizedGaussian(self.levels)
        raise NotModeled(f"qsgd followed by {after!r} has no conditional here")


class SignSGD(Defense):
    """Share sign(v) times a per-tensor scale (Bernstein et al., ICML 2018).

    Args:
        scale: "mean" (mean |v| of the tensor, so the update keeps its L1 norm) or
            "none" (the bare signs). Zero entries stay zero.
    """

    name = "signsgd"
    _spec_fields = ("scale",)

    def __init__(self, scale: str = "mean") -> None:
        if scale not in SIGN_SCALES:
            raise GradleakError(f"scale must be one of {', '.join(SIGN_SCALES)}, got {scale!r}")
        self.scale = scale

    def _tensors(self, tensors, generator, client):
        return sign_sgd(tensors, self.scale)

    def conditional(self, after, *, seed=None):
        if type(after) is Identity:
            return SignAgreement()
        raise NotModeled(f"signsgd followed by {after!r} has no conditional here")
