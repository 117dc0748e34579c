"""A small Vision Transformer (Dosovitskiy et al., ICLR 2021) in plain PyTorch.

Patches of `patch` x `patch` pixels are embedded linearly (a strided convolution), a
learned position embedding is added, `depth` pre-norm `nn.TransformerEncoderLayer`s mix
them with `heads`-head self-attention, and the mean token goes through a linear head.
Attention models are where gradient inversion is least studied and where fused attention
kernels break the attacker's double backward (`gradleak.attacks.engine.attention`).
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.models.build import MODELS
from gradleak.models.layers import check_input_shape, positive_int


class ViT(nn.Module):
    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], patch: int, dim: int, depth: int,
                 heads: int) -> None:
        super().__init__()
        c, h, w = input_shape
        tokens = (h // patch) * (w // patch)
        self.embed = nn.Conv2d(c, dim, patch, patch)
        self.position = nn.Parameter(0.02 * torch.randn(1, tokens, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.encoder(tokens)).mean(1))


@MODELS.register("vit", "Vision Transformer, patch 4, width 64, 2 pre-norm layers of 4 heads (Dosovitskiy et al. 2021)")
def vit(
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    patch: int = 4,
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
) -> nn.Module:
    name = "vit"
    shape = check_input_shape(name, input_shape)
    patch, dim, depth, heads = (positive_int(name, k, v) for k, v in
                                (("patch", patch), ("dim", dim), ("depth", depth), ("heads", heads)))
    if shape[1] < patch or shape[2] < patch:
        raise GradleakError(f"{name}: input_shape {shape} is smaller than one {patch}x{patch} patch")
    if dim % heads:
        raise GradleakError(f"{name}: option dim ({dim}) must be a multiple of heads ({heads})")
    return ViT(num_classes, shape, patch, dim, depth, heads)
