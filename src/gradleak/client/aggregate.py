"""Secure aggregation in the threat model: the server observes only the sum of N updates.

Secure aggregation (Bonawitz et al., CCS 2017; Flower's SecAgg+ workflow) lets the server
learn the sum of the clients' (pre-weighted) updates and nothing else. `aggregate_clients`
simulates the N clients of one round (each with its own batch, FedSGD or FedAvg, each
through `simulate_client`, possibly each on its own model, as a dishonest server that
breaks model consistency sends) and returns what the server observes: one `ClientUpdate`
whose `num_samples` is the total behind it, and a `Holdings` record of which client held
which samples (the auditor's ground truth; the server never sees it).

Weighting: "weighted" (FedAvg's n_j / n weights: for FedSGD on one shared model this is
exactly the gradient of the mean loss over all N batches), "mean" (1 / N each) or "sum".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from gradleak.checks import check_choice, check_seed
from gradleak.client.simulate import simulate_client
from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate, LocalTraining

WEIGHTINGS = ("weighted", "mean", "sum")


@dataclass(frozen=True)
class Holdings:
    """Who held what behind an aggregate: client j held rows `offsets[j]:offsets[j+1]` of
    the concatenated batch; `weights[j]` is the factor its update entered the sum with."""

    sizes: tuple[int, ...]
    weights: tuple[float, ...]
    weighting: str

    def __post_init__(self) -> None:
        if not self.sizes or any(int(s) < 1 for s in self.sizes) or len(self.weights) != len(self.sizes):
            raise GradleakError(f"Holdings needs one size >= 1 and one weight per client, got sizes {self.sizes} "
                                f"and {len(self.weights)} weights")

    @property
    def clients(self) -> int:
        return len(self.sizes)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def offsets(self) -> tuple[int, ...]:
        out = [0]
        for s in self.sizes:
            out.append(out[-1] + s)
        return tuple(out)

    def owner(self) -> torch.Tensor:
        """The client index of every row of the concatenated batch."""
        return torch.repeat_interleave(torch.arange(self.clients), torch.tensor(self.sizes))


@dataclass(frozen=True)
class Aggregate:
    """What a secure-aggregation server observes (`update`) and the ground truth behind it."""

    update: ClientUpdate
    holdings: Holdings


def client_weights(sizes: Sequence[int], weighting: str) -> tuple[float, ...]:
    check_choice("weighting", weighting, WEIGHTINGS)
    total = sum(sizes)
    if weighting == "weighted":
        return tuple(s / total for s in sizes)
    if weighting == "mean":
        return tuple(1.0 / len(sizes) for _ in sizes)
    return tuple(1.0 for _ in sizes)


def sum_updates(updates: Sequence[ClientUpdate], weights: Sequence[float]) -> ClientUpdate:
    """sum_j weights[j] * updates[j], tensor by tensor; num_samples is the total."""
    if not updates or len(weights) != len(updates):
        raise GradleakError(f"sum_updates needs one weight per update and at least one update, got "
                            f"{len(updates)} updates and {len(weights)} weights")
    first = updates[0]
    for j, u in enumerate(updates[1:], 1):
        if u.names != first.names or u.protocol is not first.protocol or \
                any(a.shape != b.shape for a, b in zip(u.tensors, first.tensors)):
            raise GradleakError(f"update {j} does not match update 0 (names, shapes or protocol differ): secure "
                                "aggregation sums updates of one architecture")
    tensors = tuple(sum(w * u.tensors[i] for w, u in zip(weights, updates)) for i in range(len(first.names)))
    return ClientUpdate(protocol=first.protocol, names=first.names, tensors=tensors,
                        num_samples=sum(u.num_samples for u in updates), training=first.training,
                        local_steps=max(u.local_steps for u in updates), model_mode=first.model_mode)


def aggregate_clients(models: nn.Module | Sequence[nn.Module] | Callable[[int], nn.Module],
                      batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                      training: LocalTraining = LocalTraining(), *, weighting: str = "weighted",
                      model_mode: str = "eval", seed: int = 0) -> Aggregate:
    """Simulate N clients (batch j = (images, labels) in model space) and return the aggregate.

    `models` is the one global model every client receives, one model per client (a
    server that sends different models), or a function j -> client j's model (built when
    client j trains: N large models need not be held at once). Client j trains with seed
    `seed + j`; the sum is accumulated client by client. Batch-norm statistics are not
    part of an aggregate (no client shares its own under secure aggregation).
    """
    check_seed(seed)
    if not batches:
        raise GradleakError("batches must hold at least one client's (images, labels), got none")
    if isinstance(models, nn.Module):
        model_of = lambda j: models  # noqa: E731
    elif callable(models):
        model_of = models
    else:
        listed = list(models)
        if len(listed) != len(batches):
            raise GradleakError(f"models must be one model or one per client ({len(batches)}), got {len(listed)}")
        model_of = listed.__getitem__
    sizes = tuple(int(x.shape[0]) for x, _ in batches)
    weights = client_weights(sizes, weighting)
    total = None
    for j, (x, y) in enumerate(batches):
        update = simulate_client(model_of(j), x, y, training, model_mode=model_mode, seed=seed + j)
        total = sum_updates([update], [weights[j]]) if total is None else \
            _add(total, sum_updates([update], [weights[j]]), j)
    return Aggregate(update=total, holdings=Holdings(sizes=sizes, weights=weights, weighting=weighting))


def _add(a: ClientUpdate, b: ClientUpdate, j: int) -> ClientUpdate:
    if b.names != a.names or b.protocol is not a.protocol or any(x.shape != y.shape for x, y in zip(a.tensors,
                                                                                                   b.tensors)):
        raise GradleakError(f"update {j} does not match update 0 (names, shapes or protocol differ): secure "
                            "aggregation sums updates of one architecture")
    return ClientUpdate(protocol=a.protocol, names=a.names, tensors=tuple(x + y for x, y in zip(a.tensors, b.tensors)),
                        num_samples=a.num_samples + b.num_samples, training=a.training,
                        local_steps=max(a.local_steps, b.local_steps), model_mode=a.model_mode)


__all__ = ["Aggregate", "Holdings", "WEIGHTINGS", "aggregate_clients", "client_weights", "sum_updates"]
