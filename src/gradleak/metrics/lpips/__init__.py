"""LPIPS (Zhang et al., CVPR 2018) and shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022) in plain torch.

`lpips(x, y)` per image pair, `pairwise_lpips(x, y)` for matching, `LPIPS` as a module.
Weight files are found, never downloaded (see `weights`); loaded networks are cached.
"""

from __future__ import annotations

from gradleak.metrics.lpips.metric import (
    LPIPS,
    clear_cache,
    get_network,
    lpips,
    pairwise_lpips,
)
from gradleak.metrics.lpips.networks import MIN_SIDE, NETS, VARIANTS, LPIPSNetwork
from gradleak.metrics.lpips.weights import (
    BACKBONE_FILES,
    WeightFiles,
    load_network,
    locate,
)

__all__ = [
    "BACKBONE_FILES",
    "LPIPS",
    "LPIPSNetwork",
    "MIN_SIDE",
    "NETS",
    "VARIANTS",
    "WeightFiles",
    "clear_cache",
    "get_network",
    "load_network",
    "locate",
    "lpips",
    "pairwise_lpips",
]
