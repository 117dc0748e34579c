"""Read-out of LOKI's per-client imprint bins from a secure aggregate (Zhao et al., S&P 2024).

Threat model: a malicious server (assumption level 5) that sent client j the model
`LokiModels.model(j)` (`gradleak.server.loki`) and observes only the (weighted) sum of
the clients' updates. Client j's rows of the bin layer are zero in every other client's
update, so in the sum they hold client j's update alone, scaled by its aggregation
weight; the imprint read-out (`gradleak.attacks.imprint.read_bins`, a ratio, blind to
that scale) of those rows gives the samples that fell alone in client j's bins, each
attributed to client j. No optimization, no prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from gradleak.attacks.imprint import read_bins
from gradleak.checks import check_positive_float
from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate
from gradleak.server.loki import LokiModels


@dataclass(frozen=True)
class Attributed:
    """Samples read from an aggregate: `data` (M, *input_shape) in model space, `client`
    (M,) the client each is attributed to, `unit` (M,) the bin row it was read from."""

    data: torch.Tensor
    client: torch.Tensor
    unit: torch.Tensor

    def of(self, client: int) -> torch.Tensor:
        """The samples attributed to `client`."""
        return self.data[self.client == client]


def loki_readout(server: LokiModels, update: ClientUpdate, sizes: Sequence[int] | None = None, *,
                 min_bias: float = 1e-5) -> Attributed:
    """Every sample alone in its client's bins, attributed to that client.

    `sizes[j]` caps the samples read for client j (the client's sample count, which a
    FedAvg server knows from the weighting; None: every non-empty bin is read).
    """
    check_positive_float("min_bias", min_bias)
    by_name = update.as_mapping()
    weight, bias = by_name.get(f"{server.layer}.weight"), by_name.get(f"{server.layer}.bias")
    rows = server.clients * server.bins
    if weight is None or bias is None or weight.shape[0] != rows:
        raise GradleakError(f"the update has no layer {server.layer!r} of {rows} rows: it was not computed on the "
                            f"models of this loki server ({server.spec})")
    if sizes is not None and len(sizes) != server.clients:
        raise GradleakError(f"sizes must give one count per client ({server.clients}), got {len(sizes)}")
    c = server.thresholds.to(weight.device)
    data, owner, units = [], [], []
    for j in range(server.clients):
        r = server.rows(j)
        w_j, b_j = weight[r], bias[r]
        if not bool(b_j.abs().max() > 0):
            continue  # client j sent nothing in its rows (absent, or no sample reached a bin)
        cap = server.bins if sizes is None else int(sizes[j])
        flat, found = read_bins(w_j, b_j, c, cap, min_bias=min_bias)
        data.append(flat[: len(found)])
        owner += [j] * len(found)
        units += [r.start + u for u in found]
    shape = (0, *server.input_shape)
    out = torch.cat(data).reshape(-1, *server.input_shape) if data else weight.new_zeros(shape)
    return Attributed(data=out, client=torch.tensor(owner, dtype=torch.long),
                      unit=torch.tensor(units, dtype=torch.long))


__all__ = ["Attributed", "loki_readout"]
