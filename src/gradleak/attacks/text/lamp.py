"""LAMP: Extracting Text from Gradients with Language Model Priors (Balunović, Dimitrov,
Jovanović and Vechev, NeurIPS 2022), written from the paper's method description.

Threat model: TAG's (honest-but-curious server, FedSGD, white box, number and padded
length of the sequences known, labels given or read off the bias gradient), plus an
auxiliary causal language model (`prior`, same tokenizer) as the attacker's prior on text.
Continuous steps as TAG's (L2 + `alpha` L1 gradient distance, Adam), with a regularizer
pulling the embeddings' mean norm to the vocabulary's; every `every` steps a discrete step:
for each sequence, `candidates` reorderings of its current embeddings (swap two positions,
move one position, move a span; the first position kept, the client's "<cls>") are scored
by the gradient distance plus `lm_weight` times the prior's mean next-token loss on their
nearest tokens, and the best replaces it. Without a prior only the gradient distance
scores the candidates.
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.attacks.text.tag import Tag, gradient_distance, nearest_tokens
from gradleak.checks import check_positive_float, check_positive_int
from gradleak.text.client import text_loss


def reorderings(length: int, count: int, gen: torch.Generator, keep_first: int = 1) -> list[torch.Tensor]:
    """`count` random position orders of `length` positions (the identity first): swaps,
    single moves and span moves, the first `keep_first` positions fixed."""
    out = [torch.arange(length)]
    free = length - keep_first
    if free < 2:
        return out
    for _ in range(count - 1):
        order = list(range(length))
        kind = int(torch.randint(3, (1,), generator=gen))
        i, j = sorted(int(v) + keep_first for v in torch.randperm(free, generator=gen)[:2])
        if kind == 0:
            order[i], order[j] = order[j], order[i]
        elif kind == 1:
            order.insert(j, order.pop(i))
        else:  # move the span [i, j) to the end of the sequence
            order = order[:i] + order[j:] + order[i:j]
        out.append(torch.tensor(order))
    return out


class Lamp(Tag):
    """LAMP (Balunović et al. 2022): TAG's continuous steps alternated with discrete
    reorderings scored by the gradient distance and a language-model prior.

    Args (besides TAG's): every (continuous steps between discrete steps), candidates
    (reorderings scored per sequence), lm_weight (weight of the prior's loss), emb_weight
    (weight of the embedding-norm regularizer), prior (a causal LM over the same
    vocabulary, or None)."""

    name = "lamp"

    def __init__(self, *, iterations: int = 300, lr: float = 0.01, alpha: float = 0.01, init_scale: float = 1.0,
                 every: int = 50, candidates: int = 20, lm_weight: float = 0.02, emb_weight: float = 1.0,
                 prior: nn.Module | None = None) -> None:
        super().__init__(iterations=iterations, lr=lr, alpha=alpha, init_scale=init_scale)
        self.every = check_positive_int("every", every)
        self.candidates = check_positive_int("candidates", candidates)
        self.lm_weight = check_positive_float("lm_weight", lm_weight, allow_zero=True)
        self.emb_weight = check_positive_float("emb_weight", emb_weight, allow_zero=True)
        self.prior = prior

    def _regularizer(self, x, emb):
        return self.emb_weight * (x.norm(dim=-1).mean() - emb.norm(dim=-1).mean()) ** 2

    def _prior_loss(self, tokens: tuple[int, ...]) -> float:
        if self.prior is None or self.lm_weight == 0 or len(tokens) < 2:
            return 0.0
        device = next(self.prior.parameters()).device
        ids = torch.tensor([tokens], device=device)
        with torch.no_grad():
            logits = self.prior(input_ids=ids).logits
        return float(nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]))

    def _discrete_step(self, it, model, template, params, observed, x, emb, gen) -> bool:
        if (it + 1) % self.every or it + 1 >= self.iterations:
            return False
        cpu = torch.Generator().manual_seed(int(torch.randint(2**31, (1,), generator=gen, device=gen.device)))
        with torch.no_grad():
            current = x.detach().clone()
        for b in range(current.shape[0]):
            best, best_order = float("inf"), None
            for order in reorderings(current.shape[1], self.candidates, cpu):
                trial = current.clone()
                trial[b] = current[b, order.to(current.device)]
                grads = torch.autograd.grad(text_loss(model, template, inputs_embeds=trial), params, allow_unused=True)
                score = float(gradient_distance(grads, observed, self.alpha))
                score += self.lm_weight * self._prior_loss(nearest_tokens(trial[b : b + 1], emb)[0])
                if score < best:
                    best, best_order = score, order
            current[b] = current[b, best_order.to(current.device)]
        with torch.no_grad():
            x.copy_(current)
        return True


__all__ = ["Lamp", "reorderings"]
