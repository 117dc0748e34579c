"""Federated training of a model, to measure what a defense costs in accuracy.

Clients hold IID shares of the training set. Each round every client computes its update
from the current global model (`simulate_client`, or `simulate_dp_client` for DP-SGD),
applies the defense (`Defense.transform`, seeded per client and round), and the server
averages: FedSGD steps the weights by -lr times the mean gradient (McMahan et al. 2017's
FedSGD), FedAvg adds the mean delta. Test accuracy is recorded after every round. The
caller's model is not modified.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from gradleak.defenses import Chain, ClientBatch, Defense
from gradleak.errors import GradleakError
from gradleak.fl.client import simulate_any_client
from gradleak.fl.partition import split_iid
from gradleak.records import LocalTraining, Protocol


@dataclass(frozen=True)
class FederatedConfig:
    """Rounds of federated training. Defaults fit 2 CPU cores (seconds on a small CNN)."""

    clients: int = 10
    rounds: int = 20
    training: LocalTraining = field(default_factory=lambda: LocalTraining(
        protocol=Protocol.FEDAVG, lr=0.05, epochs=1, batch_size=32, shuffle=True))
    mode: str = "train"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("clients", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GradleakError(f"{name} must be an integer >= 1, got {value!r}")
        if self.mode not in ("train", "eval"):
            raise GradleakError(f"mode must be 'train' or 'eval', got {self.mode!r}")


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


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 512) -> float:
    """Top-1 accuracy of `model` in eval mode (the caller's mode is restored)."""
    was = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, images.shape[0], batch):
            correct += int((model(images[i : i + batch]).argmax(1) == labels[i : i + batch]).sum())
    model.train(was)
    return correct / images.shape[0]


def train_federated(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    config: FederatedConfig = FederatedConfig(),
    *,
    defense: Defense | None = None,
    dp=None,
) -> TrainingResult:
    """Train a copy of `model` for `config.rounds` rounds; return its test accuracy per round.

    `train` and `test` are (images in model space, labels). `dp` is a `DPSGD` for DP-SGD
    clients (Opacus), None for plain SGD.
    """
    start = time.perf_counter()
    defense = defense if defense is not None else Chain([])
    global_model = copy.deepcopy(model)
    shares = split_iid(train[0].shape[0], config.clients, config.seed)
    seeds = np.random.SeedSequence(config.seed).generate_state(2 * config.rounds * config.clients).reshape(
        config.rounds, config.clients, 2)
    history, epsilons = [], []
    params = [p for p in global_model.parameters() if p.requires_grad]
    for r in range(config.rounds):
        updates = []
        for c, share in enumerate(shares):
            x, y = train[0][share], train[1][share]
            client_seed, defense_seed = (int(s) for s in seeds[r, c])
            update, spent = simulate_any_client(global_model, x, y, config.training, dp, mode=config.mode,
                                                seed=client_seed)
            if spent is not None:
                epsilons.append(spent.epsilon)
            batch = ClientBatch(global_model, x, y, config.training, config.mode)
            updates.append(defense.transform(update, seed=defense_seed, client=batch))
        step = -config.training.lr if config.training.protocol is Protocol.FEDSGD else 1.0
        weights = torch.tensor([float(share.numel()) for share in shares])
        weights = weights / weights.sum()  # FedAvg weighs clients by their data
        with torch.no_grad():
            for i, p in enumerate(params):
                p.add_(step * sum(w * u.tensors[i] for w, u in zip(weights, updates)))
        _refresh_batch_norm(global_model, train[0], config)
        history.append(accuracy(global_model, *test))
    return TrainingResult(history[-1], tuple(history), updates[-1].defenses if updates else (),
                          max(epsilons) if epsilons else None, time.perf_counter() - start)


def _refresh_batch_norm(model: nn.Module, images: torch.Tensor, config: FederatedConfig) -> None:
    """Clients share parameters, not BN buffers; the server re-estimates running
    statistics on a training sample so eval-mode accuracy is meaningful."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return
    gen = torch.Generator().manual_seed(config.seed)
    sample = images[torch.randperm(images.shape[0], generator=gen)[:512]]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the forward passes below
    model.train()
    with torch.no_grad():
        for i in range(0, sample.shape[0], 128):
            model(sample[i : i + 128])
