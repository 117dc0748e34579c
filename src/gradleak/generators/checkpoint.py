"""A trained generator on disk: one file read back with `torch.load(weights_only=True)`.

The file is a dict of plain values and tensors: the format tag, the architecture
(`DCGANGenerator`'s arguments), both state dicts, and a description of the training data
(data set name, split, classes, image size) so a report can reload the generator's
training images and show the nearest one beside a reconstruction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gradleak.errors import GradleakError
from gradleak.generators.dcgan import DCGANDiscriminator, DCGANGenerator

FORMAT = "gradleak-generator-1"


def save_generator(path: str | Path, generator: DCGANGenerator, discriminator: DCGANDiscriminator | None = None,
                   *, data: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    state = {
        "format": FORMAT,
        "architecture": {"latent_dim": generator.latent_dim, "image_size": generator.image_size,
                         "channels": generator.channels, "width": generator.width},
        "generator": {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()},
        "discriminator": None if discriminator is None else
        {k: v.detach().cpu().clone() for k, v in discriminator.state_dict().items()},
        "data": dict(data or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise GradleakError(f"generator checkpoint must be an existing file, got {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or not a torch file
        raise GradleakError(f"generator checkpoint {str(path)!r} could not be read safely: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise GradleakError(f"generator checkpoint {str(path)!r} is not a {FORMAT} file")
    return state


def load_generator(path: str | Path) -> DCGANGenerator:
    """The generator of a checkpoint, on the CPU, in eval mode, without gradients."""
    state = read_checkpoint(path)
    gen = DCGANGenerator(**state["architecture"])
    gen.load_state_dict(state["generator"])
    return gen.eval().requires_grad_(False)


def checkpoint_data(path: str | Path) -> dict[str, Any]:
    """The training-data description stored with a generator."""
    return dict(read_checkpoint(path)["data"])
