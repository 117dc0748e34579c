"""DP-SGD as a training defense, through Opacus (`--defense dpsgd:noise_multiplier=1.0`).

DP-SGD (Abadi et al., CCS 2016) clips each sample's gradient to norm `max_grad_norm`
(C), sums them, adds N(0, (noise_multiplier * C)^2) noise and divides by the batch size.
Opacus (Yousefpour et al. 2021) computes the per-sample gradients, clips, adds the noise
and accounts for the privacy spent. Threat model: the server sees only the privatized
update; the (epsilon, delta) guarantee bounds what any attacker, the server included,
can learn about one of the client's samples from it. The accountant assumes Poisson
sampling at `sample_rate`, as Opacus does, although the client walks fixed mini-batches.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings

import torch
from torch import nn

# opacus is imported where it is used: it costs seconds, and most runs never need it
from gradleak.checks import (
    check_choice,
    check_fraction,
    check_positive_float,
    check_seed,
)
from gradleak.client import check_batch, client_loss, minibatch_order
from gradleak.defenses.base import ClientBatch, TrainingDefense
from gradleak.devices import generator as device_generator
from gradleak.errors import GradleakError
from gradleak.records import (
    ClientUpdate,
    LocalTraining,
    PrivacySpent,
    Protocol,
    check_model_mode,
)

logger = logging.getLogger(__name__)

ACCOUNTANTS = ("rdp", "prv", "gdp")

_FIXES: dict[type, str] = {
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm),
                    "replace BatchNorm with GroupNorm (opacus ModuleValidator.fix does this)"),
    **dict.fromkeys((nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d),
                    "set track_running_stats=False (opacus ModuleValidator.fix does this)"),
    nn.LSTM: "replace it with opacus.layers.DPLSTM (opacus ModuleValidator.fix does this)",
    nn.GRU: "replace it with opacus.layers.DPGRU (opacus ModuleValidator.fix does this)",
    nn.MultiheadAttention: "replace it with opacus.layers.DPMultiheadAttention (opacus ModuleValidator.fix does this)",
}


class DPSGD(TrainingDefense):
    """DP-SGD: per-sample clipping to `max_grad_norm`, Gaussian noise of `noise_multiplier`
    times it, and the (epsilon, delta) spent, by Opacus's `accountant` ("rdp", "prv", "gdp").

    `sample_rate` is the chance a sample is in a step's batch, for the accountant (local
    batch size / local dataset size); None means batch / num_samples. The noise and the
    client's shuffling draw from the client's own seed (`ClientBatch.seed`).
    """

    name = "dpsgd"

    def __init__(self, noise_multiplier: float = 1.0, max_grad_norm: float = 1.0, delta: float = 1e-5,
                 accountant: str = "rdp", sample_rate: float | None = None) -> None:
        self.noise_multiplier = check_positive_float("noise_multiplier", noise_multiplier, allow_zero=True)
        self.max_grad_norm = check_positive_float("max_grad_norm", max_grad_norm)
        self.delta = check_fraction("delta", delta, high_open=True)
        self.accountant = check_choice("accountant", accountant, ACCOUNTANTS)
        self.sample_rate = None if sample_rate is None else check_fraction("sample_rate", sample_rate)

    def params(self) -> dict[str, object]:
        out: dict[str, object] = {"noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm}
        if self.delta != 1e-5:
            out["delta"] = self.delta
        if self.accountant != "rdp":
            out["accountant"] = self.accountant
        if self.sample_rate is not None:
            out["sample_rate"] = self.sample_rate
        return out

    def train(self, client: ClientBatch, seed: int) -> ClientUpdate:
        return simulate_dp_client(client.model, client.images, client.labels, client.training, self,
                                  model_mode=client.model_mode, seed=client.seed)


def dp_model_problems(model: nn.Module) -> list[str]:
    """One line per layer Opacus refuses: the module's name, Opacus's reason and the fix."""
    from opacus.grad_sample import GradSampleModule
    from opacus.utils.module_utils import trainable_modules
    from opacus.validators import ModuleValidator
    from opacus.validators.errors import ShouldReplaceModuleError

    problems = []
    # ModuleValidator.validate(model) names no module and flags eval mode, which we handle
    # ourselves; so run its registered per-layer validators on each named layer instead.
    for name, sub in trainable_modules(model):
        validator = ModuleValidator.VALIDATORS.get(type(sub))
        errors: list[Exception] = list(validator(sub)) if validator else []
        if not errors and any(True for _ in sub.buffers(recurse=False)):
            # GradSampleModule refuses trainable layers with buffers: they would leak unnoised
            errors = GradSampleModule.validate(sub, strict=False)[:1]
        for err in errors:
            fix = _FIXES.get(type(sub)) or ("opacus ModuleValidator.fix replaces it"
                                            if isinstance(err, ShouldReplaceModuleError)
                                            else "remove the layer or replace it with one without buffers")
            reason = " ".join(str(err).split()).split(". ")[0].rstrip(".") + "."  # Opacus's first sentence
            problems.append(f"module {name or '<root>'!r} ({type(sub).__name__}): {reason} Fix: {fix}.")
    return problems


def check_dp_model(model: nn.Module) -> None:
    problems = dp_model_problems(model)
    if problems:
        raise GradleakError("model cannot train with DP-SGD (Opacus):\n  " + "\n  ".join(problems))


def privacy_spent(dp: DPSGD, steps: int, sample_rate: float) -> PrivacySpent:
    """Epsilon at `dp.delta` after `steps` steps; inf when noise_multiplier is 0 (no privacy)."""
    from opacus.accountants import create_accountant

    if dp.noise_multiplier == 0:
        epsilon = math.inf  # the accountants divide by sigma (prv, gdp crash); no noise, no bound
    else:
        with warnings.catch_warnings(record=True) as caught:  # route Opacus's caveats to logging
            warnings.simplefilter("always")
            accountant = create_accountant(dp.accountant)
            for _ in range(steps):
                accountant.step(noise_multiplier=dp.noise_multiplier, sample_rate=sample_rate)
            epsilon = float(accountant.get_epsilon(dp.delta))
        for w in caught:
            logger.warning("opacus %s accountant: %s", dp.accountant, w.message)
    return PrivacySpent(epsilon, dp.delta, steps, dp.noise_multiplier, dp.max_grad_norm, sample_rate, dp.accountant)


def simulate_dp_client(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    training: LocalTraining,
    dp: DPSGD,
    *,
    model_mode: str = "eval",
    seed: int = 0,
) -> ClientUpdate:
    """The privatized update a DP-SGD client shares, with the privacy it spent (`update.privacy`).

    FedSGD: one DP step on the whole batch; the update is (sum of clipped per-sample
    gradients + noise) / batch size. FedAvg: local SGD at `training.lr` over the same
    mini-batches as `simulate_client`, each step a DP-SGD step; the update is
    `w_after - w_before`. `seed` drives the noise and the shuffling: the same seed gives
    the same update bit for bit. With noise_multiplier 0 the epsilon is inf. Models with
    layers Opacus refuses (BatchNorm, ...) raise GradleakError before any work.
    """
    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DPOptimizer
    from opacus.utils.module_utils import trainable_modules

    check_dp_model(model)
    check_batch(model, images, labels)
    check_model_mode(model_mode, "mode")
    if not isinstance(dp, DPSGD):
        raise GradleakError(f"dp must be a DPSGD, got {type(dp).__name__}")
    check_seed(seed)
    n = images.shape[0]
    work = copy.deepcopy(model).train(model_mode == "train")
    # Opacus records activations only for layers in training mode; flip the flag of the
    # hooked layers alone (not their children), so that eval-mode dropout stays off.
    for _, sub in trainable_modules(work):
        sub.training = True
    names = [name for name, p in work.named_parameters() if p.requires_grad]
    params = [p for p in work.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    gsm = GradSampleModule(work, batch_first=True, loss_reduction="mean")
    optimizer = DPOptimizer(
        torch.optim.SGD(params, lr=training.lr),
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=n,
        loss_reduction="mean",
        generator=device_generator(params[0].device, seed),
    )
    labels = labels.long()
    fedsgd = training.protocol is Protocol.FEDSGD
    batches = [torch.arange(n, device="cpu")] if fedsgd else minibatch_order(n, training, seed)
    try:
        for idx in batches:
            # Opacus divides the noisy sum by expected_batch_size; the last mini-batch may be
            # shorter, so set it per step to divide by the true batch size.
            optimizer.expected_batch_size = len(idx)
            optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():
                # Opacus's full backward hooks warn when the inputs need no grad: harmless here
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                client_loss(training.loss, gsm(images[idx]), labels[idx]).backward()
            if fedsgd:
                optimizer.pre_step()  # clip, noise, scale into p.grad; no parameter update
            else:
                optimizer.step()
        if fedsgd:
            tensors = tuple(p.grad.detach().clone() for p in params)
        else:
            tensors = tuple((p.detach() - b) for p, b in zip(params, before))
    finally:
        gsm.remove_hooks()
    b = n if training.batch_size is None or fedsgd else min(training.batch_size, n)
    rate = dp.sample_rate if dp.sample_rate is not None else b / n
    spent = privacy_spent(dp, len(batches), rate)
    logger.debug("DP-SGD client: %d steps, sample_rate %.4g, epsilon %.4g at delta %g",
                 len(batches), rate, spent.epsilon, dp.delta)
    return ClientUpdate(
        protocol=training.protocol,
        names=tuple(names),
        tensors=tensors,
        num_samples=n,
        training=training,
        local_steps=training.steps(n),
        model_mode=model_mode,
        defenses=(dp.spec(),),
        privacy=spent,
    )


def dp_spec(noise_multiplier: float, max_grad_norm: float = 1.0, delta: float = 1e-5) -> str:
    """The `dpsgd` spec of the deprecated flat options (--dp-noise, --dp-clip, --dp-delta)."""
    return DPSGD(noise_multiplier, max_grad_norm, delta).spec()
