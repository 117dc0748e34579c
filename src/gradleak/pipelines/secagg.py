"""The audit's client side under secure aggregation: N clients, the server sees only the sum.

Threat model (`clients > 1` with `secure_aggregation`, Bonawitz et al., CCS 2017): every
client j receives the same model the server sends, draws its own `batch_size` samples
from its share of the data (`gradleak.data.clients.client_batches`, IID or Dirichlet),
trains on them (FedSGD or FedAvg as configured, seed `seed + j`), applies the configured
defenses to its own update (defense seed derived from `seed + j`), and the server learns
only the FedAvg-weighted sum (n_j / n) of the N defended updates, whose `num_samples` is
the total. The attack then sees one update of `clients * batch_size` samples; the
auditor keeps who held which sample (`Holdings`) to score per client.

Without `secure_aggregation` there is nothing to aggregate: a server that sees every
update separately faces N single-client audits, so `AuditConfig` refuses clients > 1
without it (and `clients = 1` with it is the single-client audit: the sum of one update).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from gradleak.client import simulate_client
from gradleak.client.aggregate import Holdings, client_weights, sum_updates
from gradleak.data.clients import client_batches
from gradleak.defenses import Chain, ClientBatch
from gradleak.pipelines.config import AuditConfig
from gradleak.records import ClientUpdate, LocalTraining

WEIGHTING = "weighted"  # FedAvg's n_j / n: for FedSGD this is the gradient of the mean loss over all batches


@dataclass(frozen=True)
class Observed:
    """What the server observed (`update`) and the auditor's ground truth behind it: the
    pixel images and labels of all clients in client order, their data set indices, and
    `holdings` (client j held rows offsets[j]:offsets[j+1])."""

    update: ClientUpdate
    images: torch.Tensor
    labels: torch.Tensor
    indices: list[int]
    holdings: Holdings


def observe_aggregate(config: AuditConfig, case, model: nn.Module, training: LocalTraining, defense: Chain,
                      device: torch.device, defense_seed_of) -> Observed:
    """Simulate the configured clients and return the secure aggregate of their defended updates."""
    batches, held = client_batches(case.data, config.clients, config.batch_size, partition=config.partition,
                                   alpha=config.dirichlet_alpha, seed=config.seed)
    sizes = tuple(int(x.shape[0]) for x, _ in batches)
    weights = client_weights(sizes, WEIGHTING)
    norm = case.normalization
    updates = []
    for j, (images, labels) in enumerate(batches):
        x, y = norm.normalize(images.to(device)), labels.to(device)
        seed = config.seed + j
        update = simulate_client(model, x, y, training, model_mode=config.model_mode, seed=seed)
        client = ClientBatch(model, x, y, training, config.model_mode, seed)
        updates.append(defense.transform(update, seed=defense_seed_of(seed), client=client))
    total = sum_updates(updates, weights)
    total = replace(total, defenses=updates[0].defenses, privacy=updates[0].privacy)  # every client's own
    images = torch.cat([x for x, _ in batches]).to(device)
    labels = torch.cat([y for _, y in batches]).to(device)
    indices = [int(i) for h in held for i in h.tolist()]
    return Observed(update=total, images=images, labels=labels, indices=indices,
                    holdings=Holdings(sizes=sizes, weights=weights, weighting=WEIGHTING))


def per_client(values: tuple[float, ...], holdings: Holdings, threshold: float) -> list[float]:
    """The fraction of each client's samples whose value (PSNR, in original order) reaches `threshold`."""
    o = holdings.offsets
    return [sum(v >= threshold for v in values[o[j]:o[j + 1]]) / holdings.sizes[j] for j in range(holdings.clients)]


__all__ = ["Observed", "WEIGHTING", "observe_aggregate", "per_client"]
