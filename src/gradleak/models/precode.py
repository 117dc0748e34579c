"""PRECODE: a variational bottleneck before the classifier (Scheliga et al., WACV 2022).

Threat model: an honest-but-curious server inverts the shared gradient of a model it
knows. PRECODE inserts a variational bottleneck (VB) in front of the classifier: a
linear encoder gives the mean and (softplus) standard deviation of a K-dim Gaussian, a
sample z = mu + std * eps goes through a linear decoder back to the feature size, and
training adds beta * KL(q(z|x) || N(0, I)) to the loss. The server does not know eps, so
its simulated forward never matches the client's. Not a defense against every attack:
a fully connected first layer with a bias still leaks its input exactly (Balunovic et
al., ICLR 2022; `gradleak.attacks.analytic_fc`).

Choices:
- eps is drawn from a `torch.Generator` the module owns, so runs are reproducible;
  `reseed_noise` gives a client fresh, deterministic noise per round.
- The VB samples whenever it runs, in train and in eval mode (as the reference code
  does): gradleak clients compute updates in eval mode by default, so BatchNorm uses its
  running statistics, and the defense must still act there. `sample=False` uses z = mu.
- The KL is in nats, summed over the K latent units and averaged over the batch. The
  authors' code divides it by ln 2 (bits); that constant is absorbed by beta.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.client.losses import model_regularization  # noqa: F401  (re-exported: PRECODE's KL term)
from gradleak.errors import GradleakError
from gradleak.models.build import MODELS, check_model_options, resolve
from gradleak.models.layers import boolean, check_input_shape, positive_int

log = logging.getLogger(__name__)

_MIN_STD = 1e-12  # keeps log(std) finite when softplus underflows


class VariationalBottleneck(nn.Module):
    """features -> (mu, std) in R^k -> sample z -> features; KL to N(0, I) kept in `kl`."""

    def __init__(self, features: int, k: int = 256, *, beta: float = 1e-3, seed: int = 0,
                 sample: bool = True) -> None:
        super().__init__()
        self.features = positive_int("precode", "features", features)
        self.k = positive_int("precode", "k", k)
        self.beta = _non_negative("beta", beta)
        self.sample = boolean("precode", "sample", sample)
        self.encoder = nn.Linear(self.features, 2 * self.k)
        self.decoder = nn.Linear(self.k, self.features)
        self.generator = torch.Generator()
        self.reseed(seed)
        self.kl = torch.zeros((), device="cpu")

    def reseed(self, seed: int) -> None:
        """Restart the noise stream: the same seed gives the same eps draws."""
        self.generator.manual_seed(_check_seed(seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, raw = self.encoder(x).split(self.k, dim=-1)
        std = F.softplus(raw)
        self.kl = kl_to_standard_normal(mu, std)
        z = mu
        if self.sample:
            # drawn on the CPU generator, then moved, so the stream is device independent
            eps = torch.randn(std.shape, generator=self.generator, dtype=std.dtype, device="cpu").to(std.device)
            z = mu + std * eps
        return self.decoder(z)

    def regularization(self) -> torch.Tensor:
        """beta * KL of the last forward pass: add it to the client's loss."""
        return self.beta * self.kl

    def extra_repr(self) -> str:
        return f"features={self.features}, k={self.k}, beta={self.beta:g}, sample={self.sample}"


def kl_to_standard_normal(mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag std^2) || N(0, I)) in nats, summed over the last dim, averaged over the rest."""
    log_std = std.clamp_min(_MIN_STD).log()
    return (0.5 * (mu.pow(2) + std.pow(2) - 1) - log_std).sum(-1).mean()


def with_precode(model: nn.Module, *, k: int = 256, beta: float = 1e-3, seed: int = 0,
                 classifier: str | None = None) -> nn.Module:
    """A copy of `model` whose classifier Linear is preceded by a VariationalBottleneck.

    `classifier` names the Linear to wrap (default: the last nn.Linear in
    `named_modules()` order). The VB is initialized under `seed` (global RNG untouched)
    and draws its noise from a generator seeded with `seed`. `model` is not modified.
    """
    if not isinstance(model, nn.Module):
        raise GradleakError(f"precode: model must be an nn.Module; got {type(model).__name__}")
    work = copy.deepcopy(model)
    name = _classifier_name(work, classifier)
    linear = work.get_submodule(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_check_seed(seed))
        vb = VariationalBottleneck(linear.in_features, k, beta=beta, seed=seed)
    vb.to(device=linear.weight.device, dtype=linear.weight.dtype).train(linear.training)
    wrapped = nn.Sequential(vb, linear)
    if name == "":
        return wrapped.train(linear.training)
    parent_name, _, child = name.rpartition(".")
    setattr(work.get_submodule(parent_name), child, wrapped)
    log.debug("precode: bottleneck k=%d before %r (%d features)", k, name, linear.in_features)
    return work


def reseed_noise(model: nn.Module, seed: int) -> None:
    """Reseed every VariationalBottleneck in `model` (e.g. once per round)."""
    for module in model.modules():
        if isinstance(module, VariationalBottleneck):
            module.reseed(seed)


@MODELS.register("precode", "PRECODE: a registered model with a variational bottleneck before its classifier")
def precode(
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    base: str = "lenet",
    k: int = 256,
    beta: float = 1e-3,
    base_options: Mapping[str, object] | None = None,
) -> nn.Module:
    """`base` (a registered model, built with its defaults updated by `base_options`)
    wrapped by `with_precode`.

    The base draws its initialization first, so its weights equal those of the base model
    built alone under the same seed; the VB's initialization and noise seed come next
    from the same seeded stream.
    """
    shape = check_input_shape("precode", input_shape)
    if not isinstance(base, str) or base.lower() == "precode":
        raise GradleakError(f"precode: option base must be the name of another registered model; got {base!r}")
    if base_options is not None and not isinstance(base_options, Mapping):
        raise GradleakError(f"precode: option base_options must be a mapping of option=value; got {base_options!r}")
    options = dict(base_options or {})
    try:
        check_model_options(base, options)
    except GradleakError as exc:
        raise GradleakError(f"precode: base_options: {exc}") from None
    # the factory, not build_model, so the base consumes the caller's seeded RNG stream
    model = resolve(base)[1](num_classes, shape, **options)
    seed = int(torch.randint(0, 2**31 - 1, ()))
    return with_precode(model, k=k, beta=beta, seed=seed)


def _classifier_name(model: nn.Module, classifier: str | None) -> str:
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise GradleakError(f"precode: model {type(model).__name__} has no nn.Linear classifier to wrap")
    if classifier is None:
        return linears[-1]
    if classifier not in linears:
        raise GradleakError(f"precode: classifier must name an nn.Linear of the model; got {classifier!r}; "
                            f"Linear layers: {', '.join(repr(n) for n in linears)}")
    return classifier


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GradleakError(f"precode: seed must be an integer >= 0; got {seed!r}")
    return seed


def _non_negative(option: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise GradleakError(f"precode: option {option} must be a finite number >= 0; got {value!r}")
    return float(value)
