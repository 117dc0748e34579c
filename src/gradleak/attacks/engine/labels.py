"""Label recovery from the last layer's gradient, as small strategies.

`idlg_label` (Zhao et al. 2020, iDLG): one sample, cross-entropy, non-negative inputs
to the last linear layer: the true class is the row of the weight gradient with the
negative sum. `batch_labels`: a count-aware rule for B samples. With the mean
cross-entropy, the bias gradient of class c is mean_i(p_ic) - n_c / B, so
n_c ~= B * (p_c - g_c). The attacker does not see the client's outputs, so it
estimates the mean prediction p_c on random inputs of the known shape through the
model it holds (the idea of LLG+/iLRG-style estimators; 1/C when no shape is given),
then allocates the B labels greedily: first every class with a negative gradient
(it must occur), then by the largest remaining estimate. Exact for one sample;
approximate for trained models whose confidence on data differs from noise.
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.devices import generator, model_device
from gradleak.errors import GradleakError
from gradleak.registry import Registry


def last_linear_gradient(model: nn.Module, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight gradient, bias gradient or None) of the model's last nn.Linear."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    linear_name = None
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            linear_name = mod_name
    if linear_name is None:
        raise GradleakError("label recovery needs a model whose last layer is nn.Linear; none found")
    by_name = dict(zip(names, tensors))
    prefix = f"{linear_name}." if linear_name else ""
    weight = by_name.get(prefix + "weight")
    if weight is None:
        raise GradleakError(f"the update has no gradient for {prefix}weight")
    return weight, by_name.get(prefix + "bias")


def idlg_label(weight_grad: torch.Tensor) -> torch.Tensor:
    """iDLG: the class whose weight-gradient row sums to the smallest (negative) value."""
    return weight_grad.sum(dim=1).argmin().reshape(1)


def mean_prediction(model: nn.Module, input_shape: tuple[int, ...], samples: int = 32) -> torch.Tensor:
    """Mean softmax output of `model` on seeded N(0, 1) inputs of `input_shape`."""
    device = model_device(model)
    gen = generator(device, 0)
    with torch.no_grad():
        return torch.softmax(model(torch.randn(samples, *input_shape, generator=gen, device=device)), dim=-1).mean(0)


def batch_labels(
    weight_grad: torch.Tensor,
    bias_grad: torch.Tensor | None,
    num_samples: int,
    mean_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Count-aware label multiset for `num_samples` samples (sorted class indices)."""
    num_classes = weight_grad.shape[0]
    probs = (torch.full((num_classes,), 1.0 / num_classes, device=weight_grad.device) if mean_probs is None
             else mean_probs.double())
    score = bias_grad if bias_grad is not None else weight_grad.sum(dim=1)
    if num_samples == 1:
        return score.argmin().reshape(1)
    # without a bias, row sums carry the sign but a scale of the input norm: normalize
    scale = 1.0 if bias_grad is not None else float(score.abs().sum() / 2 + 1e-12)
    estimate = num_samples * (probs - score.double() / scale)
    counts = torch.zeros(num_classes, dtype=torch.long, device=weight_grad.device)
    for c in torch.argsort(score)[:num_samples]:
        if score[c] < 0:
            counts[c] += 1
    remaining = estimate - counts
    while int(counts.sum()) < num_samples:
        c = int(remaining.argmax())
        counts[c] += 1
        remaining[c] -= 1
    return torch.repeat_interleave(torch.arange(num_classes, device=weight_grad.device), counts)


def smallest_rows(weight_grad: torch.Tensor, num_samples: int) -> torch.Tensor:
    """iDLG's rule extended to a batch: the `num_samples` classes with the smallest row
    sums, each once (exact for distinct labels in the non-negative-feature case)."""
    if num_samples > weight_grad.shape[0]:
        raise GradleakError(
            f"label rule 'idlg' assumes distinct labels, but {num_samples} samples exceed {weight_grad.shape[0]} classes"
        )
    return torch.sort(torch.argsort(weight_grad.sum(dim=1))[:num_samples]).values


def yin_labels(weight_grad: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Yin et al. 2021 (CVPR), batch label restoration: with non-negative features, a class
    in the batch has negative entries in its weight-gradient row; the `num_samples` classes
    whose rows reach the most negative minimum, each once (distinct labels assumed)."""
    if num_samples > weight_grad.shape[0]:
        raise GradleakError(
            f"label rule 'yin' assumes distinct labels, but {num_samples} samples exceed {weight_grad.shape[0]} classes"
        )
    return torch.sort(torch.argsort(weight_grad.min(dim=1).values)[:num_samples]).values


LABEL_RULES: Registry = Registry("label rule")
LABEL_RULES.add("auto", None, "iDLG for one sample, the count-aware rule for a batch")
LABEL_RULES.add("idlg", None, "classes with the most negative weight-gradient row sums, each once (Zhao et al. 2020)")
LABEL_RULES.add("count", None, "count-aware multiset from the bias gradient and the model's mean prediction")
LABEL_RULES.add("yin", None, "classes whose weight-gradient rows hold the most negative entries, each once (Yin et al. 2021)")


def recover_labels(
    model: nn.Module,
    tensors: tuple[torch.Tensor, ...],
    num_samples: int,
    input_shape: tuple[int, ...] | None = None,
    rule: str = "auto",
) -> torch.Tensor:
    """Labels behind an update read as a gradient, by the named rule (`LABEL_RULES`)."""
    rule = LABEL_RULES.entry(rule).name
    weight, bias = last_linear_gradient(model, tensors)
    if rule == "yin":
        return yin_labels(weight, num_samples)
    if rule == "idlg" or (rule == "auto" and num_samples == 1):
        return idlg_label(weight) if num_samples == 1 else smallest_rows(weight, num_samples)
    probs = None if input_shape is None else mean_prediction(model, input_shape)
    return batch_labels(weight, bias, num_samples, probs)
