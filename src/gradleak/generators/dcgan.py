"""DCGAN-style generator and discriminator (Radford et al., ICLR 2016), plain PyTorch.

The generator maps a latent (N, latent_dim) to images (N, C, S, S) in [0, 1] pixel
space, S a power of two from 8 to 64: a transposed convolution from 1x1 to 4x4, then
one stride-2 transposed convolution per doubling, batch norm and ReLU between, and
(tanh + 1) / 2 at the end. The discriminator mirrors it with stride-2 convolutions,
LeakyReLU(0.2) and one logit per image. Widths halve per doubling from `width` times
2^(doublings - 1) channels, DCGAN's shape at smaller sizes.

The attacks in latent space (gias, ggl) accept any `nn.Module` mapping a latent to an
image in [0, 1]; they read `latent_dim` from the module when it has that attribute.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gradleak.errors import GradleakError

SIZES = (8, 16, 32, 64)


def check_generator_shape(image_size: object, channels: object, latent_dim: object, width: object) -> int:
    """The number of doublings after 4x4; raises naming the bad argument."""
    if image_size not in SIZES or isinstance(image_size, bool):
        raise GradleakError(f"image_size must be one of {SIZES}, got {image_size!r}")
    for name, value in (("channels", channels), ("latent_dim", latent_dim), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise GradleakError(f"{name} must be a positive integer, got {value!r}")
    return int(math.log2(image_size)) - 2


class DCGANGenerator(nn.Module):
    """latent (N, latent_dim) -> images (N, channels, image_size, image_size) in [0, 1]."""

    def __init__(self, latent_dim: int = 64, image_size: int = 32, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        ups = check_generator_shape(image_size, channels, latent_dim, width)
        self.latent_dim, self.image_size, self.channels, self.width = latent_dim, image_size, channels, width
        wide = width * 2 ** (ups - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, wide, 4, 1, 0, bias=False), nn.BatchNorm2d(wide),
                                   nn.ReLU(True)]
        for _ in range(ups - 1):
            layers += [nn.ConvTranspose2d(wide, wide // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(wide // 2),
                       nn.ReLU(True)]
            wide //= 2
        layers += [nn.ConvTranspose2d(wide, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise GradleakError(f"latent must be (N, {self.latent_dim}), got shape {tuple(z.shape)}")
        return (self.net(z[:, :, None, None]) + 1) / 2


class DCGANDiscriminator(nn.Module):
    """images (N, channels, image_size, image_size) in [0, 1] -> one logit per image (N,)."""

    def __init__(self, image_size: int = 32, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        downs = check_generator_shape(image_size, channels, 1, width)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        wide = width
        for _ in range(downs - 1):
            layers += [nn.Conv2d(wide, wide * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(wide * 2),
                       nn.LeakyReLU(0.2, True)]
            wide *= 2
        layers += [nn.Conv2d(wide, 1, 4, 1, 0)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1).reshape(-1)


def init_dcgan(module: nn.Module, generator: torch.Generator) -> None:
    """DCGAN's initialization: conv weights N(0, 0.02), batch-norm scales N(1, 0.02), biases 0."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator, device=generator.device) * 0.02)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + torch.randn(m.weight.shape, generator=generator, device=generator.device) * 0.02)
                m.bias.zero_()
