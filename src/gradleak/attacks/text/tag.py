"""TAG: Gradient Attack on Transformer-based Language Models (Deng et al., Findings of
EMNLP 2021), written from the paper's method description.

Threat model: honest-but-curious server, FedSGD, white-box model; knows the number of
sequences and their padded length (TextKnowledge.length); labels given or read off the
classifier's output bias gradient. Continuous stand-ins for the token embeddings are
optimized (Adam) so that the gradient they produce matches the observed one under the
squared L2 distance plus `alpha` times the L1 distance, summed over the shared
parameters; each position is then projected to the vocabulary token whose embedding is
nearest (cosine). Only sequence classifiers (BERT-like) are attacked: a causal LM's
targets are its input tokens, which a continuous relaxation of the inputs leaves
undefined (use `dager` there).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from gradleak.attacks.text.base import TextAttack
from gradleak.attacks.text.dager import class_labels
from gradleak.checks import check_positive_float, check_positive_int
from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate, Protocol
from gradleak.text.client import shared_parameters, text_loss
from gradleak.text.records import TextBatch, TextKnowledge, TextReconstruction


def gradient_distance(dummy, observed, alpha: float) -> torch.Tensor:
    """Sum over tensors of ||a - b||^2 + alpha ||a - b||_1 (tensors without a dummy gradient skipped)."""
    total = 0.0
    for a, b in zip(dummy, observed):
        if a is not None:
            diff = a - b
            total = total + diff.pow(2).sum() + alpha * diff.abs().sum()
    return total


class Tag(TextAttack):
    """TAG (Deng et al. 2021): L2 + L1 gradient matching on continuous embeddings, then
    nearest-token projection. Args: iterations, lr (Adam), alpha (weight of the L1 term),
    init_scale (standard deviation of the initial embeddings, relative to the embedding
    matrix's)."""

    name = "tag"

    def __init__(self, *, iterations: int = 300, lr: float = 0.01, alpha: float = 0.01,
                 init_scale: float = 1.0) -> None:
        self.iterations = check_positive_int("iterations", iterations)
        self.lr = check_positive_float("lr", lr)
        self.alpha = check_positive_float("alpha", alpha, allow_zero=True)
        self.init_scale = check_positive_float("init_scale", init_scale)

    def _setup(self, model: nn.Module, update: ClientUpdate, knowledge: TextKnowledge):
        kind = getattr(getattr(model, "config", None), "model_type", None)
        if kind != "bert":
            raise GradleakError(f"{self.name} attacks transformers BERT-like sequence classifiers (model_type "
                                f"'bert'), got model_type {kind!r}; for a causal LM use dager")
        if update.protocol is not Protocol.FEDSGD:
            raise GradleakError(f"{self.name} matches FedSGD gradients, got a {update.protocol.value} update")
        if knowledge.length is None:
            raise GradleakError(f"{self.name} needs the padded sequence length: set TextKnowledge.length")
        named = shared_parameters(model)
        grads = update.as_mapping()
        missing = [n for n, _ in named if n not in grads]
        if missing:
            raise GradleakError(f"the update lacks gradients of {missing[:3]}... that the model shares")
        labels = knowledge.labels
        if labels is None:
            found = class_labels(update) or (0,)
            labels = tuple(found[i % len(found)] for i in range(knowledge.num_sequences))
        return named, [grads[n] for n, _ in named], torch.tensor(labels)

    def _reconstruct(self, model: nn.Module, update: ClientUpdate, knowledge: TextKnowledge, *,
                     seed: int) -> TextReconstruction:
        start = time.perf_counter()
        named, observed, labels = self._setup(model, update, knowledge)
        emb = model.get_input_embeddings().weight.detach()
        device = emb.device
        shape = (knowledge.num_sequences, knowledge.length, emb.shape[1])
        gen = torch.Generator(device=device).manual_seed(seed)
        x = (torch.randn(shape, generator=gen, device=device) * emb.std() * self.init_scale).requires_grad_(True)
        ids = torch.zeros(shape[:2], dtype=torch.long, device=device)
        template = TextBatch(ids, torch.ones_like(ids), "classification", labels.to(device))
        params = [p for _, p in named]
        opt = torch.optim.Adam([x], lr=self.lr)
        best, best_x = float("inf"), x.detach().clone()
        for it in range(self.iterations):
            opt.zero_grad()
            dummy = torch.autograd.grad(text_loss(model, template, inputs_embeds=x), params, create_graph=True,
                                        allow_unused=True)
            loss = gradient_distance(dummy, observed, self.alpha)
            value = float(loss.detach())
            if value < best:
                best, best_x = value, x.detach().clone()
            (loss + self._regularizer(x, emb)).backward()
            opt.step()
            if self._discrete_step(it, model, template, params, observed, x, emb, gen):
                opt = torch.optim.Adam([x], lr=self.lr)  # the moments belong to the old order
                best, best_x = float("inf"), x.detach().clone()
        sequences = nearest_tokens(best_x, emb)
        return TextReconstruction(sequences, time.perf_counter() - start, "ok", labels=tuple(labels.tolist()),
                                  loss=best)


    def _regularizer(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor | float:
        return 0.0

    def _discrete_step(self, it, model, template, params, observed, x, emb, gen) -> bool:
        """Change `x` in place between continuous steps; True when it did (lamp)."""
        return False


def nearest_tokens(x: torch.Tensor, embeddings: torch.Tensor, skip: int = 1) -> tuple[tuple[int, ...], ...]:
    """Each position's nearest vocabulary token by cosine similarity (the first `skip`
    tokens, padding, excluded)."""
    e = nn.functional.normalize(embeddings[skip:], dim=-1)
    sims = nn.functional.normalize(x, dim=-1) @ e.T
    return tuple(tuple(int(t) + skip for t in row) for row in sims.argmax(-1))


__all__ = ["Tag", "gradient_distance", "nearest_tokens"]
