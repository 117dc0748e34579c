"""Federated training of a model, to measure what a defense costs in accuracy.

Clients hold IID shares of the training set. Each round every client computes its update
from the current global model (`simulate_client`), applies the defense chain
(`Defense.transform`, seeded per client and round; a training defense such as DP-SGD
opens the chain and recomputes the update), and the server averages, weighing clients by
their data: FedSGD steps the weights by -lr times the mean gradient (McMahan et al. 2017's
FedSGD), FedAvg adds the mean delta. Test accuracy is recorded after every round. The
caller's model is not modified.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from gradleak.checks import check_positive_int, check_seed
from gradleak.client import simulate_client
from gradleak.data.partition import split_iid
from gradleak.defenses import Chain, ClientBatch, Defense
from gradleak.errors import GradleakError
from gradleak.metrics import test_accuracy
from gradleak.records import ClientUpdate, LocalTraining, Protocol, check_model_mode


@dataclass(frozen=True)
class FederatedTraining:
    """Rounds of federated training. Defaults fit 2 CPU cores (seconds on a small CNN)."""

    clients: int = 10
    rounds: int = 20
    training: LocalTraining = field(default_factory=lambda: LocalTraining(
        protocol=Protocol.FEDAVG, lr=0.05, epochs=1, batch_size=32, shuffle=True))
    model_mode: str = "train"
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("clients", self.clients)
        check_positive_int("rounds", self.rounds)
        check_model_mode(self.model_mode)
        check_seed(self.seed)


@dataclass(frozen=True)
class TrainingResult:
    """Test accuracy after each round (`accuracy` is the last), what was applied, and the
    largest per-round epsilon a DP-SGD client spent (None without DP-SGD)."""

    accuracy: float
    history: tuple[float, ...]
    defenses: tuple[str, ...]
    epsilon_per_round: float | None
    seconds: float

    def to_json(self) -> dict:
        return {"accuracy": self.accuracy, "history": list(self.history), "defenses": list(self.defenses),
                "epsilon_per_round": self.epsilon_per_round, "seconds": round(self.seconds, 2)}


def train_federated(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    config: FederatedTraining = FederatedTraining(),
    *,
    defense: Defense | None = None,
    shares: list[torch.Tensor] | None = None,
) -> TrainingResult:
    """Train a copy of `model` for `config.rounds` rounds; return its test accuracy per round.

    `train` and `test` are (images in model space, labels). `shares` are the clients'
    sample indices (default: an IID split); the server weighs each update by its share.
    """
    start = time.perf_counter()
    defense = defense if defense is not None else Chain([])
    global_model = copy.deepcopy(model)
    if shares is None:
        shares = split_iid(train[0].shape[0], config.clients, config.seed)
    elif len(shares) != config.clients:
        raise GradleakError(f"shares must hold one index tensor per client ({config.clients}), got {len(shares)}")
    seeds = np.random.SeedSequence(config.seed).generate_state(2 * config.rounds * config.clients).reshape(
        config.rounds, config.clients, 2)
    history, epsilons = [], []
    params = [p for p in global_model.parameters() if p.requires_grad]
    for r in range(config.rounds):
        updates = []
        for c, share in enumerate(shares):
            x, y = train[0][share], train[1][share]
            client_seed, defense_seed = (int(s) for s in seeds[r, c])
            update = simulate_client(global_model, x, y, config.training, model_mode=config.model_mode,
                                     seed=client_seed)
            batch = ClientBatch(global_model, x, y, config.training, config.model_mode, client_seed)
            update = defense.transform(update, seed=defense_seed, client=batch)
            if update.privacy is not None:
                epsilons.append(update.privacy.epsilon)
            updates.append(update)
        step = -config.training.lr if config.training.protocol is Protocol.FEDSGD else 1.0
        average = federated_average(updates, [share.numel() for share in shares])
        with torch.no_grad():
            for p, t in zip(params, average):
                p.add_(step * t)
        _refresh_batch_norm(global_model, train[0], config)
        history.append(test_accuracy(global_model, *test))
    return TrainingResult(history[-1], tuple(history), updates[-1].defenses if updates else (),
                          max(epsilons) if epsilons else None, time.perf_counter() - start)


def federated_average(updates: Sequence[ClientUpdate], sizes: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """The server's aggregate: the clients' updates weighed by their sample counts
    (McMahan et al. 2017), tensor by tensor."""
    if len(updates) != len(sizes) or not updates:
        raise GradleakError(f"need one size per update, got {len(updates)} updates and {len(sizes)} sizes")
    if any(not isinstance(n, int) or n < 1 for n in sizes):
        raise GradleakError(f"sizes must be positive sample counts, got {list(sizes)}")
    total = float(sum(sizes))
    return tuple(sum((n / total) * u.tensors[i] for n, u in zip(sizes, updates))
                 for i in range(len(updates[0].tensors)))


def _refresh_batch_norm(model: nn.Module, images: torch.Tensor, config: FederatedTraining) -> None:
    """Clients share parameters, not BN buffers; the server re-estimates running
    statistics on a training sample so eval-mode accuracy is meaningful."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    sample = images[torch.randperm(images.shape[0], generator=gen, device="cpu")[:512]]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the forward passes below
    model.train()
    with torch.no_grad():
        for i in range(0, sample.shape[0], 128):
            model(sample[i : i + 128])
