"""SPEAR beyond the first layer (Dimitrov, Baader, Müller & Vechev, NeurIPS 2024, their
discussion of deeper fully connected layers): two stages.

Stage 1 (exact): SPEAR's linear algebra on the weight/bias gradient of a fully connected
layer with a bias followed by ReLU (`layer`, default the first such layer in forward
order) recovers that layer's B input feature vectors, each with SPEAR's certificate (run
through the layers above it with its label, it reproduces its own column of dL/dZ and
switches on exactly the units that column uses).
Stage 2 (optimization): images are fitted so that the layers below map them to the
recovered features (relative feature MSE, Adam, optional total variation, within the
attacker's box when `knowledge.bounds` is given). What stage 2 finds is only as
unique as the layers below are invertible: a wide stride-1 convolution is nearly; pooling
and narrow layers are not, and the feature loss can be low while the image is wrong.

Threat model: honest-but-curious server with the model and the update (assumption level
0; stage 2's TV and box are an image prior). FedSGD, or a FedAvg delta of one local step.
The sub-network below the layer must be a plain chain into it (its input a flat feature
vector); ReLU after the layer is required, as for `Spear`.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from gradleak.attacks.engine.latent import pixel_map
from gradleak.attacks.engine.objectives import total_variation
from gradleak.attacks.engine.problem import build_problem, validate_update
from gradleak.attacks.spear.attack import Spear, call_order
from gradleak.checks import check_optional_str, check_positive_float, check_positive_int
from gradleak.devices import generator
from gradleak.errors import GradleakError
from gradleak.records import AttackerKnowledge, ClientUpdate, Protocol, Reconstruction

NEEDS = "spear-deep needs a fully connected layer (nn.Linear with a bias) followed by ReLU"


class _Stop(Exception):
    """Ends a forward pass once the layer's input is captured."""


def layer_input(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of `layer` when the model runs on `x`, flattened per sample (B, n); the rest is not run."""
    captured: list[torch.Tensor] = []

    def hook(_m, inputs):
        captured.append(inputs[0])
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0].reshape(x.shape[0], -1)


class FromFeatures(nn.Module):
    """The model from layer `name`'s input on: forward(features (B, n)) runs the model with
    that layer's input replaced (the layers below see zeros; their output is discarded)."""

    def __init__(self, model: nn.Module, name: str, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.input_shape = input_shape

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        layer = dict(self.model.named_modules())[self.name]
        handle = layer.register_forward_pre_hook(lambda _m, _i: (features,))
        try:
            return self.model(torch.zeros(features.shape[0], *self.input_shape, dtype=features.dtype,
                                          device=features.device))
        finally:
            handle.remove()


def check_deep_layer(model: nn.Module, input_shape: tuple[int, ...], layer: str | None) -> tuple[str, nn.Linear]:
    """(name, layer) of the fully connected ReLU layer SPEAR attacks; refuses by name otherwise."""
    modules = dict(model.named_modules())
    if layer is not None and layer not in modules:
        raise GradleakError(f"layer must name a module of the model; got {layer!r}")
    calls = call_order(model, input_shape, layer)

    def followed_by_relu(name: str) -> bool:
        at = calls.index(name) if name in calls else len(calls)
        return at + 1 < len(calls) and isinstance(modules[calls[at + 1]], nn.ReLU)

    if layer is None:
        found = [n for n in calls if isinstance(modules[n], nn.Linear) and modules[n].bias is not None
                 and followed_by_relu(n)]
        if not found:
            linear = [n for n in calls if isinstance(modules[n], nn.Linear)]
            raise GradleakError(f"{NEEDS}; the model has none (its linear layers: {linear})")
        layer = found[0]
    mod = modules[layer]
    if not isinstance(mod, nn.Linear) or mod.bias is None:
        kind = type(mod).__name__ + ("" if not isinstance(mod, nn.Linear) else " without bias")
        raise GradleakError(f"{NEEDS}; layer {layer!r} is {kind}")
    if not followed_by_relu(layer):
        after = calls[calls.index(layer) + 1:] if layer in calls else []
        what = f"{after[0]!r}, {type(modules[after[0]]).__name__}" if after else "nothing (or a functional call)"
        raise GradleakError(f"{NEEDS}; layer {layer!r} is followed by {what}")
    probe = torch.zeros(1, *input_shape, dtype=mod.weight.dtype, device=mod.weight.device)
    copy_ = copy.deepcopy(model).eval()  # the caller's model (and its statistics) stay as they are
    captured: list[tuple[int, ...]] = []
    dict(copy_.named_modules())[layer].register_forward_pre_hook(lambda _m, i: captured.append(tuple(i[0].shape)))
    with torch.no_grad():
        copy_(probe)
    if captured and captured[0] != (1, mod.in_features):
        raise GradleakError(f"{NEEDS} on flat feature vectors; layer {layer!r} gets inputs of shape {captured[0]}")
    return layer, mod


class SpearDeep(Spear):
    """SPEAR on a deeper fully connected ReLU layer, then an inversion of the layers below.

    Args:
        layer: the fully connected layer's module name (None: the first nn.Linear with a bias
            followed by ReLU in forward order).
        iterations: stage 2's Adam steps. lr: its step size (cosine-annealed). tv: weight of
            total variation on the images (0: none).
        the rest: `Spear`'s options for stage 1.
    """

    name = "spear-deep"

    def __init__(self, *, layer: str | None = None, iterations: int = 300, lr: float = 0.1, tv: float = 0.0,
                 budget: int = 2_000_000, chunk: int = 8192, zero_tol: float | None = None,
                 min_zeros: int | None = None, certify_tol: float | None = None, labels: str = "layer",
                 label_rule: str = "auto", max_seconds: float | None = None) -> None:
        super().__init__(budget=budget, chunk=chunk, zero_tol=zero_tol, min_zeros=min_zeros,
                         certify_tol=certify_tol, labels=labels, label_rule=label_rule, max_seconds=max_seconds)
        self.layer = check_optional_str("layer", layer)
        self.iterations = check_positive_int("iterations", iterations)
        self.lr = check_positive_float("lr", lr)
        self.tv = check_positive_float("tv", tv, allow_zero=True)

    def _reconstruct(self, model: nn.Module, update: ClientUpdate, knowledge: AttackerKnowledge, *,
                     seed: int, callback) -> Reconstruction:
        """Stage 1: SPEAR on the layer's gradient -> features; stage 2: images matching them (`callback` unused)."""
        start = time.perf_counter()
        validate_update(model, update)
        name, _ = check_deep_layer(model, knowledge.input_shape, self.layer)
        b = knowledge.num_samples
        sol = self._solve(model, update, name, b, seed, start)
        problem = build_problem(model, update, knowledge)
        work = problem.model
        layer = dict(work.named_modules())[name]
        dtype = next(work.parameters()).dtype
        features = sol.xt.to(dtype)
        labels, certs = self._certify(FromFeatures(work, name, knowledge.input_shape), layer, features, sol.d,
                                      sol.zeros, problem, knowledge, sol.certify_tol,
                                      update.protocol is Protocol.FEDAVG)
        exact = len(sol.chosen) == b and all(c.certified for c in certs)
        data, history = self._invert(work, layer, features, knowledge, seed)
        stage1 = (f"spear-deep stage 1 (layer {name!r}): features {'exact' if exact else 'not exact'}; "
                  f"{sum(c.certified for c in certs)} of {b} feature rows certified (gradient residual <= "
                  f"{sol.certify_tol:g}, worst {max(c.residual for c in certs):.1e}; ReLU pattern mismatches "
                  f"{sum(c.pattern_mismatches for c in certs)}); factor mismatch {sol.mismatch:.1e}")
        stage2 = (f"spear-deep stage 2: feature loss {history[-1]:.2e} (relative MSE of the layers below) "
                  f"after {self.iterations} Adam steps")
        return Reconstruction(
            data=data, labels=labels, restart_losses=(history[-1],), best_restart=0,
            iterations=sol.directions.proposals + self.iterations, seconds=time.perf_counter() - start,
            status="ok" if exact else "partial", assumptions=knowledge.assumptions(),
            label_knowledge=self._label_knowledge(knowledge), loss_history=tuple(history),
            restart_statuses=("ok" if exact else "partial",), restart_mode="sequential",
            certificates=tuple(certs),
            notes=(stage1, stage2) + (() if len(sol.chosen) == b else
                                      ((f"spear-deep found {len(sol.chosen)} of {b} directions in "
                                        f"{sol.directions.proposals} proposals; raise budget"),)))

    def _invert(self, work: nn.Module, layer: nn.Module, features: torch.Tensor, knowledge: AttackerKnowledge,
                seed: int) -> tuple[torch.Tensor, list[float]]:
        """Images (B, *shape) whose layer input is `features`, and the relative feature loss per step."""
        for p in work.parameters():
            p.requires_grad_(False)
        device, dtype = features.device, features.dtype
        shape = (features.shape[0], *knowledge.input_shape)
        gen = generator(device, seed)
        bounded = knowledge.bounds is not None
        to_model = pixel_map(knowledge, device)
        start = torch.rand(shape, generator=gen, device=device) if bounded else \
            torch.randn(shape, generator=gen, device=device)
        pixels = start.to(dtype).requires_grad_(True)
        scale = features.pow(2).mean().clamp_min(torch.finfo(dtype).tiny)
        opt = torch.optim.Adam([pixels], lr=self.lr)
        history: list[float] = []

        def loss_of(p: torch.Tensor) -> torch.Tensor:
            return (layer_input(work, layer, to_model(p).to(dtype)) - features).pow(2).mean() / scale

        for step in range(self.iterations):
            loss = loss_of(pixels)
            total = loss + self.tv * total_variation(pixels) if self.tv > 0 else loss
            (grad,) = torch.autograd.grad(total, pixels)
            pixels.grad = grad
            for group in opt.param_groups:  # cosine annealing to a tenth
                group["lr"] = self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / self.iterations)))
            opt.step()
            if bounded:
                with torch.no_grad():
                    pixels.clamp_(0.0, 1.0)
            history.append(float(loss.detach()))
        with torch.no_grad():
            history.append(float(loss_of(pixels)))
            data = to_model(pixels.detach()).to(dtype)
        return data, history
