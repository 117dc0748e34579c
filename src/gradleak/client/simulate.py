"""Simulate one client's round: FedSGD gradients or a FedAvg weight delta.

FedSGD (McMahan et al. 2017): the client shares the gradient of the mean loss (cross-entropy
unless `LocalTraining.loss` says otherwise) over its whole batch. FedAvg: it runs `epochs` passes of plain SGD over mini-batches and
shares `w_after - w_before`. The same `local_training` function serves the client and an
attacker who knows the local configuration (it can keep the graph to differentiate
through the local steps). The caller's model is never mutated: parameters and buffers
are cloned and the model is run through `torch.func.functional_call` on a copy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from gradleak.checks import check_seed
from gradleak.client.losses import (
    client_loss,
    model_regularization,
    reseed_stochastic_layers,
)
from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate, LocalTraining, Protocol, check_model_mode


def minibatch_order(num_samples: int, training: LocalTraining, seed: int) -> list[torch.Tensor]:
    """Index tensors of the local mini-batches, epoch after epoch (seeded when shuffling)."""
    b = num_samples if training.batch_size is None else min(training.batch_size, num_samples)
    gen = torch.Generator(device="cpu").manual_seed(seed)  # index streams: the same on every device
    batches = []
    for _ in range(training.epochs):
        order = (torch.randperm(num_samples, generator=gen, device="cpu") if training.shuffle
                 else torch.arange(num_samples, device="cpu"))
        batches.extend(order[i : i + b] for i in range(0, num_samples, b))
    return batches


def local_training(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    targets: torch.Tensor,
    training: LocalTraining,
    *,
    seed: int = 0,
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """Run the client's local SGD from `params`; return the final parameters.

    `targets` are class indices (N,) or class probabilities (N, C). With
    `create_graph=True` the result stays differentiable w.r.t. images and targets
    (the attacker that simulates the local steps). Buffers are updated in place, so
    pass clones.
    """
    return local_steps(model, params, buffers, images, targets, training, seed=seed, create_graph=create_graph)[0]


def local_steps(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    targets: torch.Tensor,
    training: LocalTraining,
    *,
    seed: int = 0,
    create_graph: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """`local_training`'s final parameters and the sum of its step gradients: the delta in
    gradient units, (start - final) / lr, without the cancellation of subtracting two
    nearly equal weight tensors (at lr 0.003 that loses about three digits in float32)."""
    current = dict(params)
    names = list(current)
    total: dict[str, torch.Tensor] = {}
    for idx in minibatch_order(images.shape[0], training, seed):
        out = functional_call(model, (current, dict(buffers)), (images[idx],))
        loss = client_loss(training.loss, out, targets[idx]) + model_regularization(model)
        grads = torch.autograd.grad(loss, [current[n] for n in names], create_graph=create_graph)
        total = {n: total[n] + g if n in total else g for n, g in zip(names, grads)}
        current = {n: current[n] - training.lr * g for n, g in zip(names, grads)}
    return current, total


def check_batch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() < 2:
        raise GradleakError(f"images must be a tensor (N, ...) with N >= 1, got {type(images).__name__}")
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise GradleakError(f"labels must have shape ({images.shape[0]},) to match images, got {got}")
    if not any(p.requires_grad for p in model.parameters()):
        raise GradleakError("model has no trainable parameters")


def simulate_client(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    training: LocalTraining = LocalTraining(),
    *,
    model_mode: str = "eval",
    seed: int = 0,
) -> ClientUpdate:
    """The update a client with `images` (model space) and `labels` shares.

    Deterministic under `seed` (shuffling and layers that draw noise, such as PRECODE's
    bottleneck, are seeded by it). `model_mode` is the mode the client trains in
    ("train" makes BatchNorm use batch statistics).
    """
    check_batch(model, images, labels)
    check_model_mode(model_mode)
    check_seed(seed)
    work = copy.deepcopy(model).train(model_mode == "train")
    reseed_stochastic_layers(work, seed)
    names = [n for n, p in work.named_parameters() if p.requires_grad]
    params = {n: p.detach().clone().requires_grad_(True) for n, p in work.named_parameters() if p.requires_grad}
    buffers = {n: b.detach().clone() for n, b in work.named_buffers()}
    bn_stats = _batch_norm_statistics(work, params, buffers, images)
    bn_running: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    labels = labels.long()
    if training.protocol is Protocol.FEDSGD:
        out = functional_call(work, (params, buffers), (images,))
        loss = client_loss(training.loss, out, labels) + model_regularization(work)
        tensors = tuple(g.detach() for g in torch.autograd.grad(loss, [params[n] for n in names]))
    else:
        final = local_training(work, params, buffers, images, labels, training, seed=seed)
        tensors = tuple((final[n] - params[n]).detach() for n in names)
        if model_mode == "train":  # the steps updated `buffers` in place, as the client's model
            bn_running = _running_statistics(work, buffers)
    return ClientUpdate(
        protocol=training.protocol,
        names=tuple(names),
        tensors=tensors,
        num_samples=images.shape[0],
        training=training,
        local_steps=training.steps(images.shape[0]),
        model_mode=model_mode,
        bn_statistics=bn_stats,
        bn_running=bn_running,
    )


def _running_statistics(model, buffers) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Per-BN-layer (running mean, running var) in `buffers`, in module order."""
    return tuple((buffers[f"{name}.running_mean"].detach().clone(), buffers[f"{name}.running_var"].detach().clone())
                 for name, m in model.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)


def _batch_norm_statistics(model, params, buffers, images) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Per-BN-layer (mean, biased var) of the client's batch at the start of the round."""
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return ()

    def hook(_m, inputs, _out):
        x = inputs[0].detach()
        dims = [d for d in range(x.dim()) if d != 1]
        stats.append((x.mean(dims), x.var(dims, unbiased=False)))

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            functional_call(model, (params, {n: b.clone() for n, b in buffers.items()}), (images,))
    finally:
        for h in handles:
            h.remove()
    return tuple(stats)
