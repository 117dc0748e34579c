"""How a training set is divided among federated clients.

`split_iid`: a seeded random partition into near-equal shares. `split_dirichlet`: the
usual label-skewed non-IID split (Hsu et al. 2019): for each class, the share of its
samples each client gets is drawn from Dirichlet(alpha); small alpha gives clients few
classes, large alpha approaches IID.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gradleak.errors import GradleakError


def split_iid(num_samples: int, clients: int, seed: int) -> list[torch.Tensor]:
    """A seeded random partition of the sample indices into `clients` near-equal shares."""
    if clients > num_samples:
        raise GradleakError(f"clients ({clients}) exceeds the {num_samples} training samples")
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed))
    return list(order.tensor_split(clients))


def split_dirichlet(labels: torch.Tensor, clients: int, alpha: float, seed: int,
                    min_size: int = 1) -> list[torch.Tensor]:
    """Label-skewed shares: class c's samples go to clients in Dirichlet(alpha) proportions.

    Draws are repeated (from the same seeded stream) until every client holds at least
    `min_size` samples, so a share is never empty.
    """
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha > 0 and math.isfinite(alpha)):
        raise GradleakError(f"alpha must be a finite number > 0, got {alpha!r}")
    labels = torch.as_tensor(labels).reshape(-1)
    if clients * min_size > labels.numel():
        raise GradleakError(f"clients ({clients}) x min_size ({min_size}) exceeds the {labels.numel()} training samples")
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    for _ in range(1000):
        shares: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * clients))[:-1] * len(idx)).astype(int)
            for share, part in zip(shares, np.split(idx, cuts)):
                share.extend(part.tolist())
        if min(len(s) for s in shares) >= min_size:
            return [torch.tensor(sorted(s), dtype=torch.long) for s in shares]
    raise GradleakError(f"no Dirichlet(alpha={alpha}) split gave every one of {clients} clients "
                        f"{min_size} samples in 1000 draws; raise alpha or lower clients")
