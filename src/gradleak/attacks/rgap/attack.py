"""R-GAP as an attack: closed-form, layer by layer from the top (Zhu & Blaschko, ICLR 2021).

Threat model: honest-but-curious server with the model and one FedSGD gradient (or a
single-step FedAvg delta with the client's learning rate known); assumption level 0
plus, for a batch, the labels. Networks: one flat chain of bias-free Conv2d/Linear
layers with LeakyReLU or identity between them (`rgap_layers` refuses anything else by
name, before any work). Two losses:

- logistic, one logit (the paper): one sample is exact when it is misclassified
  (y u < 0); the label, when not given, is the one of y = -1, +1 whose reconstruction
  reproduces the gradient. A batch follows the paper: its mean gradient is inverted as
  one sample with the mean label, giving one combined image (status "combination",
  copied once per sample so every original is scored against it); labels must be given.
- cross-entropy, C >= 2 logits, one sample: k = softmax(z) - e_y is read off the last
  layer's rank-one gradient (`softmax_top`); the label is given or, for C >= 3, read
  from the sign pattern (with 2 classes both are tried, as for the logistic loss).
  Exact unless the softmax is saturated.

Each layer's least squares is only as good as its rank: the rank-deficient CNN6-d
leaves part of its input undetermined (`gradleak rank` shows where).
"""

from __future__ import annotations

import copy
import logging
import time

import torch
from torch import nn

from gradleak.attacks.base import Attack
from gradleak.attacks.engine.problem import validate_update
from gradleak.attacks.rgap.network import RGAPLayer, invert_layers, rgap_layers
from gradleak.attacks.rgap.recursion import (
    Inconsistent,
    logit_from_last_layer,
    softmax_top,
)
from gradleak.checks import check_positive_float, check_positive_int
from gradleak.client.losses import client_loss
from gradleak.errors import GradleakError
from gradleak.memory import PeakMemory
from gradleak.records import (
    AttackerKnowledge,
    ClientUpdate,
    LabelKnowledge,
    Protocol,
    Reconstruction,
)

log = logging.getLogger(__name__)

SCREEN_RESIDUAL = 1e-2  # relative; exact float32 gradients leave about 1e-6, a wrong label about 0.5-0.9


def observed_gradients(model: nn.Module, update: ClientUpdate, knowledge: AttackerKnowledge) -> list[torch.Tensor]:
    """The update as a gradient, in parameter order: FedSGD as is, one FedAvg step as -delta / lr."""
    if update.protocol is Protocol.FEDSGD:
        return list(update.tensors)
    if update.local_steps != 1 or not knowledge.knows_training or knowledge.training is None:
        raise GradleakError("R-GAP needs the gradient itself: a FedSGD update, or a FedAvg delta of one local step "
                            f"with the learning rate known (knows_training); got {update.local_steps} local steps"
                            + ("" if knowledge.knows_training else " and no local configuration"))
    return [-t / knowledge.training.lr for t in update.tensors]


def gradient_mismatch(model: nn.Module, layers: list[RGAPLayer], x: torch.Tensor, label: int, loss: str,
                      grads: list[torch.Tensor]) -> float:
    """Relative L2 distance between the gradient `x` would produce and the observed one."""
    work = copy.deepcopy(model).double().eval()
    out = work(x.reshape(1, *layers[0].input_shape).double())
    value = client_loss(loss, out, torch.tensor([label], device=out.device))
    predicted = torch.autograd.grad(value, [layer_param(work, layer) for layer in layers])
    num = sum(float(((p - g.double()) ** 2).sum()) for p, g in zip(predicted, grads))
    den = sum(float((g.double() ** 2).sum()) for g in grads)
    return (num / max(den, 1e-300)) ** 0.5


def layer_param(model: nn.Module, layer: RGAPLayer) -> torch.Tensor:
    return dict(model.named_parameters())[f"{layer.name}.weight"]


class RGAP(Attack):
    """R-GAP: closed-form recursive inversion of a bias-free LeakyReLU chain.

    Args:
        tol: LSQR's stopping tolerance for each convolution's least squares.
        max_iter: LSQR's iteration cap per convolution.
    """

    name = "rgap"
    label_mode = LabelKnowledge.INFERRED

    def __init__(self, *, tol: float = 1e-12, max_iter: int = 20000) -> None:
        self.tol = check_positive_float("tol", tol)
        self.max_iter = check_positive_int("max_iter", max_iter)

    def _reconstruct(self, model: nn.Module, update: ClientUpdate, knowledge: AttackerKnowledge, *,
                     seed: int, callback) -> Reconstruction:
        """Invert the update layer by layer (`seed` and `callback` are unused: nothing is random).

        The least squares are scipy's (LSQR) in float64, so R-GAP runs on the CPU whatever the
        model's device; the reconstruction is on the CPU as every attack's is."""
        loss = update.training.loss
        layers = rgap_layers(model, knowledge.input_shape, logits="one" if loss == "logistic" else "many")
        validate_update(model, update)
        model = copy.deepcopy(model).cpu()
        layers = rgap_layers(model, knowledge.input_shape, logits="one" if loss == "logistic" else "many")
        grads_by_name = {n: g.cpu() for n, g in zip(update.names, observed_gradients(model, update, knowledge))}
        names = [f"{layer.name}.weight" for layer in layers]
        if set(update.names) != set(names):
            raise GradleakError(f"R-GAP expects one gradient per weight layer {names}, the update has {update.names}")
        grads = [grads_by_name[n] for n in names]
        batch = knowledge.num_samples
        given = knowledge.labels.cpu() if knowledge.label_knowledge is LabelKnowledge.GIVEN else None
        start = time.perf_counter()
        with PeakMemory() as memory:
            if loss == "logistic" and batch > 1:
                x, labels, mismatch = self._logistic_batch(layers, grads, given, batch)
            else:
                if batch > 1:
                    raise GradleakError(f"R-GAP under cross-entropy inverts one sample, got {batch}; the paper's "
                                        "batch treatment is for the logistic loss")
                x, labels, mismatch = self._single(model, layers, grads, given, loss)
        data = x.reshape(1, *knowledge.input_shape).to(update.tensors[0].dtype).repeat(batch, *[1] * len(
            knowledge.input_shape))
        return Reconstruction(
            data=data,
            labels=labels,
            restart_losses=() if mismatch is None else (mismatch,),
            best_restart=0,
            iterations=len(layers),
            seconds=time.perf_counter() - start,
            status="combination" if batch > 1 else "ok",
            assumptions=knowledge.assumptions(),
            label_knowledge=self._label_knowledge(knowledge),
            restart_statuses=("ok",),
            peak_memory_bytes=memory.bytes,
            restart_mode="analytic",
        )

    def _invert(self, layers, grads, k, logits, screen: bool = False):
        # while screening label candidates, a wrong one shows at the first convolution as a
        # residual of order 1 (a right one: rounding level), so it is dropped there
        return invert_layers(layers, grads, k, logits, tol=self.tol, max_iter=self.max_iter,
                             max_residual=SCREEN_RESIDUAL if screen else None)

    def _best(self, model, layers, grads, loss, candidates):
        """(mismatch, x, label) of the candidate (label, k, logits) whose input reproduces the gradient."""
        screen = len(candidates) > 1
        tried = []
        for label, k, logits in candidates:
            try:
                x = self._invert(layers, grads, k, logits, screen=screen)
            except Inconsistent as exc:
                log.debug("rgap: label %s dropped: %s", label, exc)
                continue
            tried.append((gradient_mismatch(model, layers, x, label, loss, grads), x, label))
        if not tried:  # every candidate screened out (noisy gradients): compare them in full
            for label, k, logits in candidates:
                x = self._invert(layers, grads, k, logits)
                tried.append((gradient_mismatch(model, layers, x, label, loss, grads), x, label))
        return min(tried, key=lambda t: t[0])

    def _single(self, model, layers, grads, given, loss):
        top_weight = layers[-1].module.weight
        candidates: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []
        if loss == "logistic":
            problems = []
            for label in [int(given[0])] if given is not None else [0, 1]:
                try:
                    u, k = logit_from_last_layer(grads[-1], top_weight, 2 * label - 1)
                except GradleakError as exc:
                    problems.append(str(exc))
                    continue
                candidates.append((label, torch.tensor([k], dtype=torch.float64, device="cpu"), torch.tensor([u], dtype=torch.float64, device="cpu")))
            if not candidates:
                raise GradleakError(problems[0])
        else:  # with two classes the sign pattern fits either label: try both
            for wanted in [int(given[0])] if given is not None else [0, 1] if top_weight.shape[0] == 2 else [None]:
                ks, label = softmax_top(grads[-1], top_weight, wanted)
                candidates += [(label, k, None) for k in ks]
        mismatch, x, label = self._best(model, layers, grads, loss, candidates)
        log.debug("rgap: %d candidate(s), gradient mismatch %.3g", len(candidates), mismatch)
        return x, torch.tensor([label], device="cpu"), mismatch

    def _logistic_batch(self, layers, grads, given, batch):
        if given is None:
            raise GradleakError("R-GAP's batch treatment needs the labels (the paper assumes them known): "
                                "pass them (--labels given)")
        mean_label = float((2 * given.double() - 1).mean())
        if mean_label == 0:
            raise GradleakError("the batch's labels are balanced (mean label 0), where R-GAP's batch treatment "
                                "gives k = 0; use an odd batch or unbalanced labels")
        u, k = logit_from_last_layer(grads[-1], layers[-1].module.weight, mean_label)
        x = self._invert(layers, grads, torch.tensor([k], dtype=torch.float64, device="cpu"), torch.tensor([u], dtype=torch.float64, device="cpu"))
        return x, given.long().reshape(-1), None
