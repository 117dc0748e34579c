"""Input-Gradient Smoothness Analysis (IGSA) of the SoK (Du et al., "SoK: Gradient
Inversion Attacks in Federated Learning", Sec. 5.1): how smoothly a model's per-layer
gradient changes as its input moves, which is what gradient matching follows.

The published formula was lost in extraction; this is OUR definition, stated exactly.
For a model, images x_i (N, ...) with labels y_i and the client loss:

- layers l = 1..L are the modules owning trainable parameters, in the order their
  parameters first appear in `named_parameters()`; g_l(x) is the gradient of the
  single-sample loss of (x, y) w.r.t. module l's trainable parameters (concatenated);
- for each image, R = radius * sqrt(d) (d = x_i.numel(); `radius` is an RMS distance
  per coordinate). S points x' = x_i + e are drawn with e uniform in the L2 ball of
  radius R (uniform direction, norm R U^(1/d)), each with one probe direction v uniform
  on the unit sphere, all from a torch.Generator seeded by `seed`;
- rho_l(x', v) = R ||J_l(x') v|| / ||g_l(x')|| with J_l = dg_l/dx, computed exactly by
  forward-over-reverse AD (torch.func.jvp of torch.func.grad): the first-order relative
  change of layer l's gradient when the input moves R along v (0/0 = 0, c/0 = inf);
- s_l = mean over images and samples of 1 / (1 + rho_l), in (0, 1];
- IGSA = sum_l w_l s_l with w_l = (L - l + 1) / (L (L + 1) / 2) ("linear": shallow
  layers weigh most, sum 1) or w_l = 1 / L ("uniform"); IGSA lies in (0, 1].

Higher means smoother: within the radius the input-to-gradient map changes little
relative to its size, which makes gradient matching easier for an attacker (the paper:
high IGSA goes with successful reconstruction, low with failure late in training).
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from gradleak.client.losses import client_loss
from gradleak.errors import GradleakError
from gradleak.records import check_loss

logger = logging.getLogger(__name__)

WEIGHTS = ("linear", "uniform")

# (x, y, v) -> (||g_l(x)||, ||J_l(x) v||), each a float64 tensor (L,)
NormsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class IGSAResult:
    """The IGSA score and its per-layer parts (layers from the input up)."""

    score: float
    layers: tuple[str, ...]
    weights: tuple[float, ...]
    layer_scores: tuple[float, ...]
    layer_rho_median: tuple[float, ...]
    radius: float
    samples: int
    images: int
    seconds: float

    def to_json(self) -> dict:
        """A JSON-ready dict; an infinite median rho is written as null."""
        return {"score": self.score, "layers": list(self.layers), "weights": list(self.weights),
                "layer_scores": list(self.layer_scores),
                "layer_rho_median": [v if math.isfinite(v) else None for v in self.layer_rho_median],
                "radius": self.radius, "samples": self.samples, "images": self.images, "seconds": self.seconds}


def trainable_layers(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(module name, its trainable parameter names) in order of first appearance."""
    layers: dict[str, list[str]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            layers.setdefault(name.rpartition(".")[0], []).append(name)
    return list(layers.items())


def layer_weights(name: str, count: int) -> list[float]:
    """Weights of `count` layers from the input up: "linear" (L - l + 1) / (L (L + 1) / 2) or "uniform"."""
    if name == "linear":
        total = count * (count + 1) / 2
        return [(count - i) / total for i in range(count)]
    if name == "uniform":
        return [1.0 / count] * count
    raise GradleakError(f"weights must be one of {list(WEIGHTS)}, got {name!r}")


def relative_change(radius: float, grad_norm: float, jvp_norm: float) -> float:
    """rho = R ||J v|| / ||g||, with 0 when both norms are 0 and inf when only ||g|| is."""
    if grad_norm == 0.0:
        return 0.0 if jvp_norm == 0.0 else math.inf
    return radius * jvp_norm / grad_norm


def gradient_norms(net: nn.Module, loss: str = "cross-entropy") -> tuple[list[str], NormsFn]:
    """Layer names and a function (x, y, v) -> (||g_l(x)||, ||J_l(x) v||) for one sample.

    `net` is called with detached copies of its trainable parameters (torch.func), so
    pass a copy in eval mode (`igsa` and `layer_jvp_norms` do) to leave the original alone.
    """
    layers = trainable_layers(net)
    params = {name: p.detach() for name, p in net.named_parameters() if p.requires_grad}

    def sample_loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return client_loss(loss, functional_call(net, p, (x.unsqueeze(0),)), y.reshape(1))

    gradient = grad(sample_loss)

    def norms(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g, jv = jvp(lambda x_: gradient(params, x_, y), (x,), (v,))
        return _per_layer(g, layers), _per_layer(jv, layers)

    return [name for name, _ in layers], norms


def layer_jvp_norms(model: nn.Module, x: torch.Tensor, y: int | torch.Tensor, v: torch.Tensor, *,
                    loss: str = "cross-entropy") -> tuple[torch.Tensor, torch.Tensor]:
    """(||g_l(x)||, ||J_l(x) v||) per layer for one sample x (no batch axis) and label y."""
    _, norms = gradient_norms(copy.deepcopy(model).eval(), check_loss(loss))
    return norms(x, torch.as_tensor(y), v)


def _per_layer(tensors: dict[str, torch.Tensor], layers: list[tuple[str, list[str]]]) -> torch.Tensor:
    return torch.stack([torch.sqrt(sum(tensors[n].double().square().sum() for n in names)) for _, names in layers])


def ball_samples(x: torch.Tensor, radius: float, samples: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`samples` points uniform in the L2 ball of `radius` around x, and one unit direction each (float64)."""
    d = x.numel()
    where = {"generator": generator, "dtype": torch.float64, "device": generator.device}
    direction = _unit(torch.randn(samples, d, **where))
    norm = radius * torch.rand(samples, 1, **where) ** (1.0 / d)
    probes = _unit(torch.randn(samples, d, **where))
    points = x.detach().double().to(generator.device).reshape(1, d) + norm * direction
    return points.reshape(samples, *x.shape), probes.reshape(samples, *x.shape)


def _unit(z: torch.Tensor) -> torch.Tensor:
    return z / z.norm(dim=1, keepdim=True)


def igsa(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, radius: float = 0.05, samples: int = 8,
         weights: str = "linear", loss: str = "cross-entropy", seed: int = 0) -> IGSAResult:
    """The model's IGSA score on `images` (N, ...) in its input space with integer `labels` (N,).

    See the module docstring for the definition; `model` is not modified and the global
    RNG is not used.
    """
    start = time.perf_counter()
    _check_model(model)
    loss = check_loss(loss)
    _check_inputs(images, labels, radius, samples, seed)
    net = copy.deepcopy(model).eval()
    names, norms = gradient_norms(net, loss)
    w = layer_weights(weights, len(names))
    param = next(p for p in net.parameters() if p.requires_grad)
    x = images.detach().to(device=param.device, dtype=param.dtype)
    y = labels.detach().to(device=param.device)
    _check_labels(net, x, y, loss)

    gen = torch.Generator(device="cpu").manual_seed(seed)  # the same sample points on every device
    rhos = []  # one (L,) row per image and sample
    for i in range(len(x)):
        big_r = radius * math.sqrt(x[i].numel())
        points, probes = ball_samples(x[i], big_r, samples, gen)
        for point, probe in zip(points.to(x), probes.to(x)):
            g_norm, jv_norm = norms(point, y[i], probe)
            rhos.append([relative_change(big_r, a, b) for a, b in zip(g_norm.tolist(), jv_norm.tolist())])
    rho = torch.tensor(rhos, dtype=torch.float64, device="cpu")
    layer_scores = (1.0 / (1.0 + rho)).mean(dim=0).tolist()  # 1 / (1 + inf) = 0
    score = math.fsum(a * b for a, b in zip(w, layer_scores))
    result = IGSAResult(score=score, layers=tuple(names), weights=tuple(w), layer_scores=tuple(layer_scores),
                        layer_rho_median=tuple(statistics.median(c) for c in zip(*rhos)), radius=float(radius),
                        samples=int(samples), images=len(x), seconds=time.perf_counter() - start)
    logger.info("IGSA %.4f over %d layers, %d images x %d samples, radius %g (%.2f s)", score, len(names),
                len(x), samples, radius, result.seconds)
    return result


def _check_model(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise GradleakError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not any(p.requires_grad for p in model.parameters()):
        raise GradleakError(f"model must have trainable parameters, got none in {type(model).__name__}")


def _check_inputs(images: object, labels: object, radius: object, samples: object, seed: object) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        dtype = f" {images.dtype}" if isinstance(images, torch.Tensor) else ""
        raise GradleakError(f"images must be a float tensor (N, C, H, W) or (N, ...), got {shape}{dtype}")
    if len(images) == 0 or images[0].numel() == 0:
        raise GradleakError(f"images must hold at least one non-empty image, got shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise GradleakError("images must be finite, got NaN or infinite values")
    if (not isinstance(labels, torch.Tensor) or labels.shape != (len(images),) or labels.is_floating_point()
            or labels.is_complex() or labels.dtype == torch.bool):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        dtype = f" {labels.dtype}" if isinstance(labels, torch.Tensor) else ""
        raise GradleakError(f"labels must be an integer tensor of shape ({len(images)},), got {shape}{dtype}")
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not math.isfinite(radius) or radius <= 0:
        raise GradleakError(f"radius must be a finite number > 0, got {radius!r}")
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
        raise GradleakError(f"samples must be an integer >= 1, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise GradleakError(f"seed must be an integer, got {seed!r}")


def _check_labels(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> None:
    """Labels must lie in [0, outputs) (0 or 1 for the logistic loss's single logit)."""
    with torch.no_grad():
        outputs = net(x[:1]).shape[-1]
    classes = 2 if loss == "logistic" else outputs
    bad = [int(v) for v in y if not 0 <= int(v) < classes]
    if bad:
        raise GradleakError(f"labels must lie in [0, {classes - 1}] for a model with {outputs} output(s), "
                            f"got {bad[0] if len(bad) == 1 else bad}")
