"""GIAS (Jeon et al. 2021): exact recovery of an image in the generator's range, and the
generator stage reaching images outside it."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_lenet
from torch import nn

from gradleak.attacks import ATTACKS
from gradleak.client import simulate_client
from gradleak.errors import GradleakError
from gradleak.generators import DCGANGenerator, save_generator
from gradleak.metrics.functional import psnr
from gradleak.records import AttackerKnowledge, Assumption, LabelKnowledge


class TinyGenerator(nn.Module):
    """Any module mapping a latent to an image in [0, 1] works: here one linear layer."""

    latent_dim = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 64)
        with torch.no_grad():
            self.fc.weight.mul_(4)  # images that differ visibly from one latent to the next

    def forward(self, z):
        return torch.sigmoid(self.fc(z)).reshape(-1, 1, 8, 8)


def problem(num: int, off_range: float = 0.0):
    gen = TinyGenerator()
    z = torch.randn(num, 4, generator=torch.Generator().manual_seed(5))
    noise = torch.randn(num, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        images = (gen(z) + off_range * noise).clamp(0, 1)
    labels = torch.arange(num)
    model = tiny_lenet(channels=1, size=8, classes=4)
    update = simulate_client(model, images, labels)
    knowledge = AttackerKnowledge(num_samples=num, input_shape=(1, 8, 8), num_classes=4, bounds=((0.0,), (1.0,)),
                                  label_knowledge=LabelKnowledge.GIVEN, labels=labels)
    return gen, model, update, knowledge, images


def test_recovers_images_that_lie_in_the_generators_range():
    gen, model, update, knowledge, images = problem(2)
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    chance = psnr(gen(torch.randn(2, 4, generator=torch.Generator().manual_seed(11))).detach(), images)
    attack = ATTACKS.create("gias", {"generator": gen, "latent_iterations": 150, "generator_iterations": 0,
                                     "lr": 0.05, "restarts": 4})
    result = attack.reconstruct(model, update, knowledge, seed=0)
    assert float(chance.max()) < 10
    assert float(psnr(result.data, images).min()) > 35
    assert result.gradient_mismatch < 1e-2
    assert Assumption.DATA_DISTRIBUTION in result.assumptions
    assert all(torch.equal(v, gen.state_dict()[k]) for k, v in before.items())  # the caller's generator


def test_the_generator_stage_reaches_outside_the_range():
    gen, model, update, knowledge, images = problem(1, off_range=0.15)
    options = {"generator": gen, "latent_iterations": 100, "lr": 0.05, "generator_lr": 1e-2, "restarts": 2}
    latent_only = ATTACKS.create("gias", options | {"generator_iterations": 0}).reconstruct(
        model, update, knowledge, seed=0)
    both = ATTACKS.create("gias", options | {"generator_iterations": 30}).reconstruct(model, update, knowledge, seed=0)
    assert min(both.restart_losses) < 0.9 * min(latent_only.restart_losses)
    assert float(psnr(both.data, images)) > float(psnr(latent_only.data, images))
    # a penalty that pins the weights leaves the latent stage's image (nearly) as it was
    pinned = ATTACKS.create("gias", options | {"generator_iterations": 10, "penalty": 1e6, "generator_lr": 1e-3})
    held = pinned.reconstruct(model, update, knowledge, seed=0)
    assert float(psnr(held.data, latent_only.data)) > 30
    assert -1e-6 < min(held.restart_losses) <= min(latent_only.restart_losses)  # the penalty is never a reward


def test_takes_a_checkpoint_and_refuses_a_generator_of_the_wrong_shape(tmp_path):
    _, model, update, knowledge, _ = problem(1)
    path = save_generator(tmp_path / "g.pt", DCGANGenerator(latent_dim=4, image_size=8, channels=1, width=4).eval())
    result = ATTACKS.create("gias", {"generator": str(path), "latent_iterations": 3, "generator_iterations": 2,
                                     "restarts": 1}).reconstruct(model, update, knowledge, seed=0)
    assert result.data.shape == (1, 1, 8, 8)
    wrong = DCGANGenerator(latent_dim=4, image_size=16, channels=1, width=4)
    with pytest.raises(GradleakError, match="shape"):
        ATTACKS.create("gias", {"generator": wrong, "latent_iterations": 2}).reconstruct(model, update, knowledge)
    with pytest.raises(GradleakError, match="generator"):
        ATTACKS.create("gias", {"generator": "missing.pt"})


def test_takes_a_users_generator_from_a_python_file(tmp_path):
    _, model, update, knowledge, _ = problem(1)
    (tmp_path / "mine.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "class G(nn.Module):\n"
        "    latent_dim = 3\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(3, 64)\n"
        "    def forward(self, z):\n"
        "        return torch.sigmoid(self.fc(z)).reshape(-1, 1, 8, 8)\n"
        "def make():\n"
        "    return G()\n")
    result = ATTACKS.create("gias", {"generator": f"{tmp_path / 'mine.py'}:make", "latent_iterations": 3,
                                     "generator_iterations": 1, "restarts": 1}).reconstruct(model, update, knowledge)
    assert result.data.shape == (1, 1, 8, 8)
