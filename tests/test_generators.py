"""Generators for latent-space attacks: shapes, training that learns, seeds, checkpoints."""

from __future__ import annotations

import pytest
import torch

from gradleak.errors import GradleakError
from gradleak.generators import (
    DCGANDiscriminator,
    DCGANGenerator,
    GeneratorTraining,
    latent_evidence,
    load_generator,
    sample,
    save_generator,
    train_generator,
)
from gradleak.generators.quality import nearest_psnr


def templates(n: int = 128, seed: int = 0) -> torch.Tensor:
    """n 8x8 gray images: one of four bars, lightly noised (a distribution a tiny GAN can learn)."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.zeros(4, 1, 8, 8)
    base[0, :, 2:6, :] = 1
    base[1, :, :, 2:6] = 1
    base[2, :, :4, :4] = 1
    base[3, :, 4:, 4:] = 1
    pick = torch.randint(0, 4, (n,), generator=gen)
    return (base[pick] * 0.8 + 0.1 + 0.05 * torch.randn(n, 1, 8, 8, generator=gen)).clamp(0, 1)


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_shapes_and_pixel_range(size):
    gen = DCGANGenerator(latent_dim=8, image_size=size, channels=3, width=8).eval()
    x = gen(torch.randn(2, 8)).detach()
    assert x.shape == (2, 3, size, size) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert DCGANDiscriminator(size, 3, 8)(x).shape == (2,)


def test_bad_arguments_name_themselves():
    with pytest.raises(GradleakError, match="image_size"):
        DCGANGenerator(image_size=24)
    with pytest.raises(GradleakError, match="latent"):
        DCGANGenerator(latent_dim=8, image_size=8)(torch.randn(2, 9))
    with pytest.raises(GradleakError, match="images"):
        train_generator(torch.rand(4, 1, 8, 8) * 2)


def test_a_tiny_generator_learns_the_data():
    images = templates(256)
    before = images.clone()
    config = GeneratorTraining(epochs=40, batch_size=32, lr=2e-3, latent_dim=8, width=16, seed=0)
    untrained = DCGANGenerator(8, 8, 1, 16).eval()
    trained = train_generator(images, config)
    assert torch.equal(images, before)
    assert len(trained.history) == 40 and all(torch.isfinite(torch.tensor(
        [h.discriminator, h.generator])).all() for h in trained.history)
    # samples move from noise to the bars: their PSNR to the nearest training image rises by far
    far = float(nearest_psnr(sample(untrained, 32, seed=1), images).mean())
    near = float(nearest_psnr(sample(trained.generator, 32, seed=1), images).mean())
    assert near > far + 5, (far, near)
    # GAN losses head for their equilibrium rather than fall (D's loss -> log 4): the loss that
    # falls is the samples' distance to the data, above; at the end D no longer tells them apart
    assert abs(trained.history[-1].fake_score - trained.history[-1].real_score) < 0.1


def test_training_is_seeded():
    images = templates(64)
    config = GeneratorTraining(epochs=2, batch_size=32, latent_dim=4, width=4, seed=3)
    a, b = train_generator(images, config), train_generator(images, config)
    assert all(torch.equal(x, y) for x, y in zip(a.generator.state_dict().values(), b.generator.state_dict().values()))


def test_checkpoint_round_trip(tmp_path):
    trained = train_generator(templates(64), GeneratorTraining(epochs=1, batch_size=32, latent_dim=4, width=4))
    path = save_generator(tmp_path / "g.pt", trained.generator, trained.discriminator,
                          data={"dataset": "bars", "split": "train", "classes": [0, 1], "image_size": 8})
    torch.load(path, weights_only=True)  # plain values and tensors only
    loaded = load_generator(path)
    z = torch.randn(3, 4)
    assert torch.equal(loaded(z), trained.generator(z))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GradleakError, match="could not be read"):
        load_generator(tmp_path / "bad.pt")


def test_latent_evidence_tells_a_copy_of_training_from_the_clients_image():
    train, client = templates(16, seed=1), templates(4, seed=2)
    evidence = latent_evidence(client[[2]], train, client, true_index=[2])
    assert evidence.client.identified == (True,)
    assert evidence.nearest_training.nearest_score[0] < 60  # near but not the same image
    copy = latent_evidence(train[[5]], train, client, true_index=[0])
    assert copy.nearest_training.nearest == (5,)
