"""Read-out of class fishing (Wen et al., ICML 2022): inverting gradients on the target.

Threat model: a malicious server (assumption level 5) that set the last layer with
`gradleak.server.Fishing`. Below the last layer the update is the gradient of the target
class's samples alone (up to scale, which the cosine objective ignores), so inverting
gradients (Geiping et al. 2020) runs as on one sample of the target class, on every
tensor but the last layer's. The target is read from the model: the one row of the
last layer the server left non-zero. The reconstruction's first row is the target; the
others, which the server did not fish, are zeros.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from gradleak.attacks.ig import InvertingGradients
from gradleak.errors import GradleakError
from gradleak.records import Assumption, AttackerKnowledge, LabelKnowledge
from gradleak.server.fishing import last_layer


class FishingReadout(InvertingGradients):
    """Inverting gradients on the fished target (options as `ig`; `skip` is set here)."""

    name = "fishing"

    def _reconstruct(self, model, update, knowledge, *, seed, callback):
        name, layer = last_layer(copy.deepcopy(model), tuple(knowledge.input_shape))
        rows = (layer.weight.detach().abs().sum(1) > 0).nonzero().squeeze(1) if hasattr(layer, "weight") else None
        if rows is None or len(rows) != 1:
            raise GradleakError(f"attack 'fishing' reads a model whose last layer keeps one class's row; layer {name!r} "
                                "does not: send the model with the fishing server (--server fishing) first")
        target = int(rows[0])
        prefix = f"{name}." if name else ""
        inner = copy.copy(self)
        inner.skip = tuple(self.skip) + (prefix + "weight", prefix + "bias")
        one = dataclasses.replace(knowledge, num_samples=1, label_knowledge=LabelKnowledge.GIVEN,
                                  labels=torch.tensor([target], device=layer.weight.device))
        recon = InvertingGradients._reconstruct(inner, model, dataclasses.replace(update, num_samples=1), one,
                                                seed=seed, callback=callback)
        n = knowledge.num_samples
        data = torch.cat([recon.data, torch.zeros(n - 1, *recon.data.shape[1:], dtype=recon.data.dtype,
                                                  device=recon.data.device)])
        labels = torch.full((n,), target, dtype=torch.long, device=recon.data.device)
        return dataclasses.replace(recon, data=data, labels=labels, assumptions=self._assumptions(knowledge),
                                   label_knowledge=self._label_knowledge(knowledge),
                                   status=recon.status if n == 1 else "partial")

    def _assumptions(self, knowledge: AttackerKnowledge) -> tuple[Assumption, ...]:
        return tuple(sorted(set(super()._assumptions(knowledge)) | {Assumption.MALICIOUS}))


__all__ = ["FishingReadout"]
