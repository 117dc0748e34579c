"""Robbing the Fed: a linear imprint block in front of any model (Fowl et al., ICLR 2022).

Threat model: a malicious server (assumption level 5) that sends a model with an extra
block in front; the client trains it unchanged. The block's k bin units all measure one
linear function m(x) = w . x of the (flattened, model-space) input, the mean brightness
or a random projection (w of unit norm), with biases -c_1 < ... at the quantiles of m's
distribution, estimated from public images (empirical quantiles, or a Gaussian fitted
to them) or assumed N(loc, std^2) (pixels independent N(0, 1) give std 1). Unit i fires
for every sample with m(x) > c_i, so bins i and i+1 differ exactly by the samples with
c_i < m(x) <= c_{i+1}; the lowest threshold sits far below the data, so the k bins are
equally likely under the server's estimate.

The block is residual: y = x + u * s * sum_i relu(w . x - c_i) / k (u a random unit
vector, s = `scale`), the bins summed before one back column, so the loss gradient
reaching each bin unit is the same for one sample, whichever unit and at every local
step (with `back="per-bin"`, k back columns as in the paper, equal only until the
client's first local step changes them: FedAvg then blurs the read-out). The difference of two
neighbouring bins' weight-gradient rows over the difference of their bias gradients is
then exactly the sample alone between them (`gradleak.attacks.imprint` reads it out).
A small `scale` keeps the model's function nearly unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gradleak.checks import check_choice, check_positive_float, check_positive_int
from gradleak.devices import generator
from gradleak.errors import GradleakError
from gradleak.records import Assumption
from gradleak.server.base import ServerBehaviour, ServerModel
from gradleak.server.expectation import Expectation, expected_recovery

MEASUREMENTS = ("brightness", "random")
ESTIMATES = ("quantiles", "gaussian")
BACKS = ("shared", "per-bin", "fixed")
FLOOR_STDS = 10.0  # the lowest threshold sits this many spreads below the data: every sample fires it


class ImprintBlock(nn.Module):
    """x + back(relu(bins(flatten(x)))), reshaped: the bins read, the back path passes on.

    `back` "shared": the bins' outputs are summed before one back column (k -> 1 -> d),
    so every bin unit of one sample gets the same loss gradient at every local step;
    "per-bin": each bin has its own back column (k -> d, the paper's two linear layers),
    equal only until the client's first local step changes them; "fixed": the summed
    bins times a fixed direction held as a buffer, which the client does not train.
    """

    def __init__(self, input_shape: tuple[int, ...], bins: int, back: str = "shared") -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.mode = back
        size = math.prod(self.input_shape)
        self.bins = nn.Linear(size, bins)
        if back == "fixed":
            self.back = None
            self.register_buffer("direction", torch.zeros(size))
        else:
            self.back = nn.Linear(1 if back == "shared" else bins, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bins(x.flatten(1)))
        if self.mode != "per-bin":
            h = h.sum(1, keepdim=True)
        out = h * self.direction if self.back is None else self.back(h)
        return x + out.reshape(x.shape)


class Imprinted(nn.Module):
    """The imprint block in front of the client's model."""

    def __init__(self, imprint: ImprintBlock, model: nn.Module) -> None:
        super().__init__()
        self.imprint = imprint
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.imprint(x))


def measurement(kind: str, size: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """The unit-norm vector w of the measured linear function m(x) = w . x."""
    if kind == "brightness":
        w = torch.ones(size, device=device)
    else:
        w = torch.randn(size, generator=gen, device=device)
    return w / w.norm()


def thresholds(bins: int, values: torch.Tensor | None, estimate: str, loc: float, std: float) -> torch.Tensor:
    """k increasing thresholds: the (i/k)-quantiles of the measurement, i = 1..k-1, below
    them one far under the data. `values` are the public images' measurements (None:
    assume N(loc, std^2))."""
    levels = torch.arange(1, bins, dtype=torch.float64) / bins
    if values is not None:
        v = values.double().cpu()
        loc, std = float(v.mean()), float(v.std())
        if not std > 0:
            raise GradleakError("the public images all give the same measurement: the bins cannot be estimated")
    if values is not None and estimate == "quantiles":
        inner = torch.quantile(v, levels)
        low = float(v.min()) - FLOOR_STDS * std
    else:
        inner = loc + std * torch.special.ndtri(levels)
        low = loc - FLOOR_STDS * std
    return torch.cat([torch.tensor([low], dtype=torch.float64), inner])


def imprint_parameters(block: ImprintBlock, w: torch.Tensor, c: torch.Tensor, u: torch.Tensor, scale: float,
                       gain: float = 1.0) -> None:
    """Set the block: every bin row `gain * w`, biases `-gain * c`, every back column
    `u * scale / (k * gain)` (the block's output does not depend on `gain`)."""
    k = block.bins.out_features
    with torch.no_grad():
        block.bins.weight.copy_(gain * w.expand(k, -1))
        block.bins.bias.copy_(-gain * c.to(block.bins.bias))
        if block.back is None:
            block.direction.copy_(u * scale / (k * gain))
        else:
            block.back.weight.copy_((u * scale / (k * gain))[:, None].expand_as(block.back.weight))
            block.back.bias.zero_()


class Imprint(ServerBehaviour):
    """Robbing the Fed's imprint block of `bins` bins in front of the model.

    Args:
        bins: number of bin units k.
        measure: "brightness" (mean of the input) or "random" (a seeded random projection).
        estimate: "quantiles" of the public images' measurements, or "gaussian" (fitted to
            the public images when given, else N(loc, std^2) assumed).
        public: the registered data set the server estimates from (None: assume the
            Gaussian); the pipelines load it and convert it to the client's image shape.
        loc, std: the assumed Gaussian when no public images are given.
        scale: size of the block's output added to the input (small: the model's function
            barely changes).
        back: "shared" (bins summed, one back column), "per-bin" (one column per bin, the
            paper's), or "fixed" (bins summed, a fixed direction the client does not
            train: under FedAvg the trained back column grows with the summed bins'
            output, step after step, and drags the thresholds; a fixed one cannot).
        gain: the bin layer's weights and biases are `gain` times the measurement and
            thresholds (the back layer divides it out). A FedAvg delta is a difference of
            float32 weights, precise to about 6e-8 of the weights: a small gain makes the
            bin layer's weights small and its changes large, so the read-out stays precise;
            too small, and the bins' thresholds drift during the local steps.
    """

    name = "imprint"
    _spec_fields = ("bins", "measure", "estimate", "public", "loc", "std", "scale", "back", "gain")

    def __init__(self, *, bins: int = 128, measure: str = "random", estimate: str = "quantiles",
                 public: str | None = None, loc: float = 0.0, std: float = 1.0, scale: float = 1.0,
                 back: str = "shared", gain: float = 1.0) -> None:
        self.bins = check_positive_int("bins", bins)
        if self.bins < 2:
            raise GradleakError(f"bins must be at least 2, got {bins!r}")
        self.measure = check_choice("measure", measure, MEASUREMENTS)
        self.estimate = check_choice("estimate", estimate, ESTIMATES)
        if public is not None and not isinstance(public, str):
            raise GradleakError(f"public must be the name of a data set or None, got {public!r}")
        self.public = self.public_data = public
        self.loc = float(loc)
        self.std = check_positive_float("std", std)
        self.scale = check_positive_float("scale", scale)
        self.back = check_choice("back", back, BACKS)
        self.gain = check_positive_float("gain", gain)

    def expected(self, num_samples: int) -> Expectation:
        return expected_recovery(num_samples, self.bins)

    def _design(self, model, input_shape, seed, public) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The measurement w, the thresholds c and the back direction u (unit norm), seeded."""
        if self.public is not None and public is None:
            raise GradleakError(f"{self.name} server estimates its bins from data set {self.public!r}: pass its "
                                "images as public=")
        if self.estimate == "quantiles" and public is None:
            raise GradleakError(f"{self.name} estimate='quantiles' needs public images (public=...); "
                                "or use estimate='gaussian'")
        first = next(model.parameters(), None)
        device = torch.device("cpu") if first is None else first.device
        size = math.prod(input_shape)
        gen = generator(device, seed)
        w = measurement(self.measure, size, gen, device)
        u = torch.randn(size, generator=gen, device=device)
        values = None if public is None else public.to(device, torch.float32).flatten(1) @ w
        return w, thresholds(self.bins, values, self.estimate, self.loc, self.std), u / u.norm()

    def _build(self, model, input_shape, *, seed, public) -> ServerModel:
        w, c, u = self._design(model, input_shape, seed, public)
        first = next(model.parameters(), None)
        device = torch.device("cpu") if first is None else first.device
        dtype = torch.float32 if first is None else first.dtype
        block = ImprintBlock(input_shape, self.bins, self.back).to(device, dtype)
        imprint_parameters(block, w, c, u, self.scale, self.gain)
        source = "gaussian assumed" if public is None else f"{self.estimate} of {public.shape[0]} public images"
        return ServerModel(model=Imprinted(block, model), spec=self.spec(), assumption=Assumption.MALICIOUS,
                           layer="imprint.bins", probabilities=(1.0 / self.bins,) * self.bins,
                           notes=(f"imprint: {self.bins} bins of a {self.measure} measurement, {source}",))


__all__ = ["ESTIMATES", "Imprint", "ImprintBlock", "Imprinted", "MEASUREMENTS", "imprint_parameters",
           "measurement", "thresholds"]
