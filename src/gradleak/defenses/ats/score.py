"""ATS's search metrics, the privacy score S_pri and the accuracy score S_acc, and the search.

Gao et al., "Privacy-preserving Collaborative Learning with Automatic Transformation Search",
CVPR 2021, Sec. 4 (as the paper describes it and the authors' release computes it).

Privacy score. For a policy T, an image x with label y, loss L and weights W:
    GradSim(a, b) = <dL(a, y)/dW, dL(b, y)/dW> / (|dL(a, y)/dW| |dL(b, y)/dW|)
    S_pri(T) = mean over the images x of  integral_0^1 GradSim(x'(a), T(x)) da,
    x'(a) = (1 - a) x0 + a T(x),  x0 ~ U[0, 1] per pixel (noise in pixel space).
The integral is the trapezoid rule on `steps` equal intervals, a = 0, 1/steps, ..., 1 (the
release uses 20 and the trapezoid rule; the paper writes a K-step Riemann sum). The path is the
one an optimization attack travels from random noise to the transformed image: a small area
means the gradient resembles the true one only at the very end, so gradient matching is
poorly guided. LOWER S_pri = MORE PRIVATE; it lies in [-1, 1] and the curve ends at 1. The
paper's GradSim is the cosine of the whole gradient (the default); `per_layer=True` averages
per-layer cosines as the release's code does. A zero gradient has similarity 0. The model is
used in eval mode; the paper scores on a model trained briefly (10% of the data, few epochs).

Accuracy score, after Mellor et al. ("Neural Architecture Search without Training", 2021):
for a randomly initialized model f and the batch {T(x_n)}, J_n = d(sum_k f_k(T(x_n)))/dT(x_n)
flattened, and s_i the eigenvalues of the N x N correlation matrix of the J_n:
    S_acc(T) = -sum_i [log(s_i + eps) + 1 / (s_i + eps)],  eps = 1e-5.
HIGHER S_acc = BETTER expected accuracy: it is at most about -N, reached when the per-image
Jacobians are uncorrelated (the untrained network tells the transformed images apart). It
scales with N: the release keeps policies with S_acc >= -85 on its batch (up to 100 CIFAR-100
images of distinct classes).

Search: score every candidate, drop those under `min_accuracy`, rank the rest by S_pri
(ascending; ties by S_acc, descending) and keep the first `keep`, the paper's top-n.
"""

from __future__ import annotations

import copy
import logging
from typing import NamedTuple, Sequence

import torch
from torch import nn

from gradleak.client.losses import client_loss
from gradleak.data.base import Normalization
from gradleak.defenses.ats.policies import Policy, parse_policy
from gradleak.defenses.base import check_seed
from gradleak.errors import GradleakError
from gradleak.records import check_loss

log = logging.getLogger(__name__)


class ScoredPolicy(NamedTuple):
    policy: Policy
    privacy: float  # S_pri, lower is more private
    accuracy: float  # S_acc, higher is better


def privacy_score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, policy: str | Policy | None = None,
                  *, steps: int = 20, seed: int = 0, normalization: Normalization | None = None,
                  per_layer: bool = False, loss: str = "cross-entropy") -> float:
    """S_pri of `policy` (None: no transformation) on `images` (N, C, H, W) in [0, 1] pixel
    space; the model sees `normalization.normalize(x)` when given. The noise x0 is the first
    draw of torch.Generator().manual_seed(seed), the policy's randomness the next."""
    x = _check_images(images)
    if not isinstance(labels, torch.Tensor) or labels.shape != (x.shape[0],):
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise GradleakError(f"labels must have shape ({x.shape[0]},) to match images, got {got}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise GradleakError(f"steps must be an integer >= 1, got {steps!r}")
    check_loss(loss)
    generator = torch.Generator().manual_seed(check_seed(seed))
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
    target = _transform(x, policy, generator)
    work = copy.deepcopy(model).eval()  # never touch the caller's model or its mode
    params = [p for p in work.parameters() if p.requires_grad]
    if not params:
        raise GradleakError("model has no trainable parameters")

    def grad(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = work(normalization.normalize(z) if normalization is not None else z)
        return torch.autograd.grad(client_loss(loss, out, y), params)

    areas = []
    for i in range(x.shape[0]):
        y = labels[i : i + 1].long()
        true = grad(target[i : i + 1], y)
        curve = torch.tensor([_similarity(grad((1 - k / steps) * noise[i : i + 1] + k / steps * target[i : i + 1], y),
                                          true, per_layer) for k in range(steps + 1)], dtype=torch.float64)
        areas.append(float((curve[:-1] + curve[1:]).sum() / (2 * steps)))
    return sum(areas) / len(areas)


def accuracy_score(model: nn.Module, images: torch.Tensor, policy: str | Policy | None = None, *, seed: int = 0,
                   normalization: Normalization | None = None, epsilon: float = 1e-5) -> float:
    """S_acc of `policy` on `images` (N >= 2, pixel space); pass the model at initialization."""
    x = _check_images(images)
    if x.shape[0] < 2:
        raise GradleakError(f"accuracy_score needs a batch of at least 2 images to correlate, got {x.shape[0]}")
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not epsilon > 0:
        raise GradleakError(f"epsilon must be a number > 0, got {epsilon!r}")
    transformed = _transform(x, policy, torch.Generator().manual_seed(check_seed(seed)))
    work = copy.deepcopy(model).eval()
    inputs = (normalization.normalize(transformed) if normalization is not None else transformed).detach()
    inputs.requires_grad_(True)
    (jacobian,) = torch.autograd.grad(work(inputs).sum(), inputs)
    corr = torch.corrcoef(jacobian.reshape(x.shape[0], -1).double())
    # a constant Jacobian row has no correlation: count it as uncorrelated, not NaN
    corr = torch.nan_to_num(corr, nan=0.0).fill_diagonal_(1.0)
    eig = torch.linalg.eigvalsh(corr).clamp_min(0)  # round-off can dip below 0
    return float(-(torch.log(eig + epsilon) + 1 / (eig + epsilon)).sum())


def search_policies(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    candidates: Sequence[str | Policy], *, keep: int = 5, seed: int = 0,
                    accuracy_model: nn.Module | None = None, min_accuracy: float | None = None,
                    steps: int = 20, normalization: Normalization | None = None,
                    per_layer: bool = False) -> list[ScoredPolicy]:
    """The `keep` most private candidates whose S_acc >= `min_accuracy` (None: no threshold).

    S_pri uses `model` (the paper: briefly trained), S_acc `accuracy_model` (the paper: a
    randomly initialized copy; defaults to `model`). Every candidate sees the same noise."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise GradleakError(f"keep must be an integer >= 1, got {keep!r}")
    if isinstance(candidates, (str, Policy)) or not len(candidates):
        raise GradleakError(f"candidates must be a non-empty sequence of policies like ['3-1-7'], got {candidates!r}")
    scored = []
    for candidate in candidates:
        policy = parse_policy(candidate)
        scored.append(ScoredPolicy(
            policy,
            privacy_score(model, images, labels, policy, steps=steps, seed=seed, normalization=normalization,
                          per_layer=per_layer),
            accuracy_score(accuracy_model if accuracy_model is not None else model, images, policy, seed=seed,
                           normalization=normalization)))
        log.debug("ATS candidate %s: S_pri=%.4f S_acc=%.4f", *scored[-1])
    kept = [s for s in scored if min_accuracy is None or s.accuracy >= min_accuracy]
    log.info("ATS search: %d of %d candidates pass S_acc >= %s", len(kept), len(scored), min_accuracy)
    return sorted(kept, key=lambda s: (s.privacy, -s.accuracy))[:keep]


def _check_images(images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point() \
            or images.shape[0] < 1:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise GradleakError(f"images must be a float tensor (N, C, H, W) in [0, 1] with N >= 1, got {got}")
    return images.detach()


def _transform(images: torch.Tensor, policy: str | Policy | None, generator: torch.Generator) -> torch.Tensor:
    return images if policy is None else parse_policy(policy).apply(images, generator)


def _similarity(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], per_layer: bool) -> float:
    if per_layer:
        return sum(_cosine(u, v) for u, v in zip(a, b)) / len(a)
    return _cosine(torch.cat([u.flatten() for u in a]), torch.cat([v.flatten() for v in b]))


def _cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    u, v = u.flatten().double(), v.flatten().double()
    norm = float(u.norm() * v.norm())
    return float(u @ v) / norm if norm > 0 else 0.0
