"""The batches of N clients of one round, drawn from a data set split among them.

`client_batches` splits the data set IID or label-skewed (Dirichlet, as `gradleak flower`
does: `gradleak.data.partition`) into N shares and draws each client's `per_client`
samples from its own share (seeded), so no two clients hold the same sample. Feed the
result (normalized) to `gradleak.client.aggregate_clients`.
"""

from __future__ import annotations

import torch

from gradleak.checks import check_choice, check_positive_int, check_seed
from gradleak.data.base import ImageDataset
from gradleak.data.partition import split_dirichlet, split_iid
from gradleak.errors import GradleakError

PARTITIONS = ("iid", "dirichlet")


def client_batches(data: ImageDataset, clients: int, per_client: int, *, partition: str = "iid",
                   alpha: float = 0.5, seed: int = 0) -> tuple[list[tuple[torch.Tensor, torch.Tensor]],
                                                                list[torch.Tensor]]:
    """([(pixel images, labels)] per client, [the data set indices each client holds])."""
    n = check_positive_int("clients", clients)
    per = check_positive_int("per_client", per_client)
    check_choice("partition", partition, PARTITIONS)
    check_seed(seed)
    if n * per > len(data):
        raise GradleakError(f"clients x per_client ({n} x {per}) exceeds the {len(data)} samples of {data.name!r}")
    shares = split_iid(len(data), n, seed) if partition == "iid" else \
        split_dirichlet(data.labels, n, alpha, seed, min_size=per)
    gen = torch.Generator().manual_seed(seed)
    held = []
    for j, share in enumerate(shares):
        if len(share) < per:
            raise GradleakError(f"client {j}'s share holds {len(share)} samples, fewer than per_client ({per})")
        held.append(share[torch.randperm(len(share), generator=gen)[:per]])
    return [data.batch(h.tolist()) for h in held], held


__all__ = ["PARTITIONS", "client_batches"]
