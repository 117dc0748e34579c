"""Training a DCGAN on images in [0, 1]: the non-saturating GAN loss (Goodfellow et al.
2014) with DCGAN's optimizer settings (Adam, lr 2e-4, betas (0.5, 0.999); Radford et al.
2016).

Seeded (initialization, shuffling and latents draw from generators seeded by
`GeneratorTraining.seed`), device-aware, and it never modifies the caller's images.
The result holds the trained networks on the CPU, in eval mode, and one row of losses
per epoch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.checks import check_positive_float, check_positive_int, check_seed
from gradleak.devices import generator as seeded
from gradleak.errors import GradleakError
from gradleak.generators.dcgan import DCGANDiscriminator, DCGANGenerator, init_dcgan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneratorTraining:
    """How a DCGAN is trained; `width` is the generator's and discriminator's base width."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    latent_dim: int = 64
    width: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "latent_dim", "width"):
            check_positive_int(name, getattr(self, name))
        check_positive_float("lr", self.lr)
        if not 0 <= self.beta1 < 1:
            raise GradleakError(f"beta1 must be in [0, 1), got {self.beta1!r}")
        check_seed(self.seed)


@dataclass(frozen=True)
class EpochLosses:
    """Mean losses of one epoch: the discriminator's (real + fake) and the generator's."""

    epoch: int
    discriminator: float
    generator: float
    real_score: float  # mean sigmoid(D(real)): 0.5 when D cannot tell
    fake_score: float  # mean sigmoid(D(G(z)))


@dataclass(frozen=True)
class TrainedGenerator:
    generator: DCGANGenerator
    discriminator: DCGANDiscriminator
    config: GeneratorTraining
    history: tuple[EpochLosses, ...]
    seconds: float


EpochCallback = Callable[[EpochLosses], None]


def check_images(images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise GradleakError(f"images must be a tensor (N, C, S, S), got {shape}")
    if images.shape[0] < 2:
        raise GradleakError(f"images must hold at least 2 images to train on, got {images.shape[0]}")
    if not torch.isfinite(images).all() or float(images.min()) < 0 or float(images.max()) > 1:
        raise GradleakError("images must hold finite pixel values in [0, 1]")
    return images


def train_generator(
    images: torch.Tensor,
    config: GeneratorTraining = GeneratorTraining(),
    *,
    device: torch.device | str = "cpu",
    on_epoch: EpochCallback | None = None,
) -> TrainedGenerator:
    """Train a DCGAN on `images` (N, C, S, S) in [0, 1], S in 8, 16, 32, 64."""
    images = check_images(images)
    device = torch.device(device)
    n, c, size = images.shape[0], images.shape[1], images.shape[-1]
    gen = DCGANGenerator(config.latent_dim, size, c, config.width).to(device)
    disc = DCGANDiscriminator(size, c, config.width).to(device)
    draws = seeded(device, config.seed)
    init_dcgan(gen, draws)
    init_dcgan(disc, draws)
    opt_g = torch.optim.Adam(gen.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=(config.beta1, 0.999))
    data = images.detach().to(device=device, dtype=torch.float32)  # a copy when it moves; never written
    batch = min(config.batch_size, n)
    history = []
    start = time.perf_counter()
    gen.train()
    disc.train()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(n, generator=draws, device=device)
        sums = torch.zeros(4, dtype=torch.float64)
        steps = 0
        for i in range(0, n - batch + 1, batch):  # full batches only: batch norm needs more than one image
            real = data[order[i:i + batch]]
            z = torch.randn(batch, config.latent_dim, generator=draws, device=device)
            fake = gen(z)
            d_real, d_fake = disc(real), disc(fake.detach())
            loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            d_gen = disc(fake)
            loss_g = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            sums += torch.tensor([loss_d.item(), loss_g.item(), torch.sigmoid(d_real).mean().item(),
                                  torch.sigmoid(d_fake).mean().item()], dtype=torch.float64)
            steps += 1
        row = EpochLosses(epoch, *(float(v) / steps for v in sums))
        history.append(row)
        log.debug("generator epoch %d: D %.3f G %.3f", epoch, row.discriminator, row.generator)
        if on_epoch is not None:
            on_epoch(row)
    gen, disc = gen.cpu().eval(), disc.cpu().eval()
    for module in (gen, disc):
        module.requires_grad_(False)
    return TrainedGenerator(gen, disc, config, tuple(history), time.perf_counter() - start)


def sample(generator: nn.Module, count: int, *, seed: int = 0, latent_dim: int | None = None) -> torch.Tensor:
    """`count` images of `generator` (eval mode, no gradients) from seeded N(0, 1) latents."""
    check_positive_int("count", count)
    from gradleak.devices import model_device

    device = model_device(generator)
    dim = latent_dim if latent_dim is not None else getattr(generator, "latent_dim", None)
    if dim is None:
        raise GradleakError("latent_dim is needed for a generator without a latent_dim attribute")
    z = torch.randn(count, dim, generator=seeded(device, seed), device=device)
    was = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            return generator(z).clamp(0, 1)
    finally:
        generator.train(was)
