"""Read-out of Robbing the Fed's imprint block (Fowl et al., ICLR 2022).

Threat model: a malicious server (assumption level 5) that built the model with
`gradleak.server.Imprint` and reads the update the unchanged client computed on it
(FedSGD gradient or FedAvg delta). Sorting the bin units by threshold, the difference
of neighbouring units' weight-gradient rows over the difference of their bias gradients
is the mean of the samples between the two thresholds, weighted by their loss gradient:
exactly the sample when it is alone there (the top unit alone holds the top bin). Bins
whose bias-gradient difference vanishes are empty. No optimization, no prior.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from gradleak.attacks.base import Attack
from gradleak.attacks.engine.labels import LABEL_RULES
from gradleak.attacks.engine.problem import build_problem, validate_update
from gradleak.attacks.engine.restarts import known_or_inferred_labels
from gradleak.checks import check_positive_float
from gradleak.errors import GradleakError
from gradleak.records import Assumption, AttackerKnowledge, ClientUpdate, LabelKnowledge, Reconstruction
from gradleak.server import ImprintBlock, first_layer


def read_bins(weight_grad: torch.Tensor, bias_grad: torch.Tensor, thresholds: torch.Tensor, num_samples: int, *,
              min_bias: float = 1e-5) -> tuple[torch.Tensor, list[int]]:
    """Samples (num_samples, features) read from the bins, and the unit that gave each.

    `thresholds` are the units' thresholds c_i (unit i fires when m(x) > c_i). A bin is
    the interval between a unit's threshold and the next higher one; it is non-empty when
    its bias-gradient difference exceeds `min_bias` times the largest. At most
    `num_samples` bins are read, the strongest first; missing samples are zeros.
    """
    order = thresholds.argsort()
    dw = weight_grad.double()[order]
    db = bias_grad.double()[order]
    diff_w = torch.cat([dw[:-1] - dw[1:], dw[-1:]])
    diff_b = torch.cat([db[:-1] - db[1:], db[-1:]])
    strength = diff_b.abs()
    top = float(strength.max())
    full = (strength > min_bias * top).nonzero().squeeze(1) if top > 0 else torch.zeros(0, dtype=torch.long)
    full = full[strength[full].argsort(descending=True)][:num_samples]
    data = torch.zeros(num_samples, weight_grad.shape[1], dtype=weight_grad.dtype, device=weight_grad.device)
    data[: len(full)] = (diff_w[full] / diff_b[full, None]).to(weight_grad.dtype)
    units = [int(order[i]) for i in full.tolist()]
    return data, units


class ImprintReadout(Attack):
    """Closed-form read-out of the samples that fell alone in an imprint block's bins.

    Args:
        min_bias: a bin whose bias-gradient difference is below this fraction of the
            largest is empty.
        label_rule: how labels are recovered when not given (`LABEL_RULES`).
    """

    name = "imprint"
    label_mode = LabelKnowledge.INFERRED

    def __init__(self, *, min_bias: float = 1e-5, label_rule: str = "auto") -> None:
        self.min_bias = check_positive_float("min_bias", min_bias)
        self.label_rule = LABEL_RULES.entry(label_rule).name

    def _reconstruct(self, model: nn.Module, update: ClientUpdate, knowledge: AttackerKnowledge, *,
                     seed: int, callback) -> Reconstruction:
        """Read the samples off the imprint block's update (`seed` and `callback` are unused)."""
        start = time.perf_counter()
        validate_update(model, update)
        name, layer = first_layer(model, knowledge.input_shape)
        block_name = name.rpartition(".")[0]
        block = dict(model.named_modules()).get(block_name) if name.endswith("bins") else None
        if not isinstance(block, ImprintBlock):
            raise GradleakError(f"attack 'imprint' reads an imprint block's bins, but the model's first layer "
                                f"{name!r} is {type(layer).__name__}: send the model with the imprint server "
                                "(--server imprint) first")
        if block.input_shape != tuple(knowledge.input_shape):
            raise GradleakError(f"the imprint block takes inputs of shape {block.input_shape}, the knowledge says "
                                f"{tuple(knowledge.input_shape)}")
        by_name = update.as_mapping()
        weight, bias = by_name[f"{name}.weight"], by_name[f"{name}.bias"]
        c = -layer.bias.detach().to(weight.device)
        flat, units = read_bins(weight, bias, c, knowledge.num_samples, min_bias=self.min_bias)
        problem = build_problem(model, update, knowledge)
        labels = known_or_inferred_labels(problem, knowledge, self.label_rule)
        units_out = tuple((u,) for u in units) + ((),) * (knowledge.num_samples - len(units))
        return Reconstruction(
            data=flat.reshape(knowledge.num_samples, *knowledge.input_shape),
            labels=labels,
            restart_losses=(0.0,),
            best_restart=0,
            iterations=0,
            seconds=time.perf_counter() - start,
            status="ok" if len(units) == knowledge.num_samples else "partial",
            assumptions=self._assumptions(knowledge),
            label_knowledge=self._label_knowledge(knowledge),
            restart_statuses=("ok",),
            restart_mode="analytic",
            units=units_out,
        )

    def _assumptions(self, knowledge: AttackerKnowledge) -> tuple[Assumption, ...]:
        # the model it reads was built by a malicious server, whatever the knowledge says
        return tuple(sorted(set(knowledge.assumptions()) | {Assumption.MALICIOUS}))


__all__ = ["ImprintReadout", "read_bins"]
