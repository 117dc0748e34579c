"""A text client's round: FedSGD gradient or FedAvg delta of a `transformers` model on a
padded `TextBatch`.

The loss is the model's own mean loss: next-token cross-entropy over the real tokens of a
causal LM (padding masked out of attention and of the targets), or cross-entropy of the
class labels of a sequence classifier. Only parameters that require gradients are shared
(with a LoRA-wrapped model: the adapter weights only). The caller's model is never
modified: FedSGD differentiates without touching `.grad`, FedAvg trains a copy.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from gradleak.checks import check_seed
from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate, LocalTraining, Protocol
from gradleak.text.records import TextBatch


def shared_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs a client shares: those that require gradients."""
    out = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not out:
        raise GradleakError("model has no parameter that requires gradients; nothing to share")
    return out


def text_loss(model: nn.Module, batch: TextBatch, inputs_embeds: torch.Tensor | None = None,
              labels: torch.Tensor | None = None) -> torch.Tensor:
    """The client's mean loss on `batch`; `inputs_embeds` (B, T, d) replaces the token
    embeddings (the continuous attacks), `labels` (B,) or (B, C) soft labels replace the
    batch's class labels."""
    device = next(model.parameters()).device
    mask = batch.attention_mask.to(device)
    kwargs = {"attention_mask": mask}
    if inputs_embeds is None:
        kwargs["input_ids"] = batch.input_ids.to(device)
    else:
        kwargs["inputs_embeds"] = inputs_embeds
    logits = model(**kwargs).logits
    if batch.task == "causal-lm":
        targets = batch.input_ids.to(device).masked_fill(mask == 0, -100)[:, 1:]
        return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                           ignore_index=-100)
    y = batch.labels.to(device) if labels is None else labels
    if y.ndim == 2:  # soft labels (an attacker's unknowns)
        return -(y * torch.log_softmax(logits, -1)).sum(-1).mean()
    return nn.functional.cross_entropy(logits, y)


def text_update(model: nn.Module, batch: TextBatch, training: LocalTraining | None = None, *,
                seed: int = 0) -> ClientUpdate:
    """The update a text client shares after training on `batch` (FedSGD by default).

    The model runs in eval mode (no dropout), as the attacks assume; FedAvg runs
    `training.epochs` passes of SGD over mini-batches of `training.batch_size` sequences
    (in order, or shuffled under `seed`) and shares `w_after - w_before`.
    """
    training = LocalTraining() if training is None else training
    check_seed(seed)
    if training.loss != "cross-entropy":
        raise GradleakError(f"text clients train with cross-entropy, got loss={training.loss!r}")
    was_training = model.training
    if training.protocol is Protocol.FEDSGD:
        named = shared_parameters(model)
        model.eval()
        try:
            grads = torch.autograd.grad(text_loss(model, batch), [p for _, p in named], allow_unused=True)
        finally:
            model.train(was_training)
        tensors = tuple(torch.zeros_like(p) if g is None else g.detach() for (_, p), g in zip(named, grads))
        return ClientUpdate(Protocol.FEDSGD, tuple(n for n, _ in named), tensors, batch.num_sequences, training, 1)
    local = copy.deepcopy(model).eval()
    named = shared_parameters(local)
    before = [p.detach().clone() for _, p in named]
    opt = torch.optim.SGD([p for _, p in named], lr=training.lr)
    n = batch.num_sequences
    b = n if training.batch_size is None else min(training.batch_size, n)
    gen = torch.Generator().manual_seed(seed)
    steps = 0
    for _ in range(training.epochs):
        order = torch.randperm(n, generator=gen) if training.shuffle else torch.arange(n)
        for i in range(0, n, b):
            idx = order[i : i + b]
            mask = batch.attention_mask[idx]
            width = int(mask.sum(1).max())
            part = TextBatch(batch.input_ids[idx, :width], mask[:, :width], batch.task,
                             None if batch.labels is None else batch.labels[idx])
            opt.zero_grad()
            text_loss(local, part).backward()
            opt.step()
            steps += 1
    tensors = tuple((p.detach() - b0) for (_, p), b0 in zip(named, before))
    return ClientUpdate(Protocol.FEDAVG, tuple(n for n, _ in named), tensors, batch.num_sequences, training, steps)


__all__ = ["shared_parameters", "text_loss", "text_update"]
