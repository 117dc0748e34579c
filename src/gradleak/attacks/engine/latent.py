"""What the latent-space attacks (gias, ggl) share: the attacker's copy of the generator,
the map from its pixels to the model's input space, and a view that decodes latent rows.

A generator is any `nn.Module` mapping latents (N, latent_dim) to images (N, *input_shape)
in [0, 1] pixel space, or the path of a checkpoint written by
`gradleak.generators.save_generator`, or "FILE.py:FACTORY" whose FACTORY() returns the
module (the model-file mechanism; the CLI's `--attack-opt generator=...` takes all three
spellings but a module). Pixels reach the model's input space through the
attacker's box (`AttackerKnowledge.bounds`: model-space values of pixels 0 and 1); with
no box the model is taken to read pixels as they are.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gradleak.attacks.engine.problem import MatchingProblem, build_problem
from gradleak.attacks.engine.restarts import known_or_inferred_labels
from gradleak.devices import model_device
from gradleak.errors import GradleakError
from gradleak.records import Assumption, AttackerKnowledge, ClientUpdate

GeneratorSpec = "nn.Module | str | Path"


def generator_argument(generator: object, latent_dim: object) -> tuple[nn.Module | Path, int | None]:
    """Check the attack's `generator` and `latent_dim` arguments (a path is loaded later);
    "FILE.py:FACTORY" (the model-file mechanism) calls FACTORY() for the user's module."""
    if isinstance(generator, str) and ".py:" in generator:
        from gradleak.models.build import resolve

        generator = resolve(generator)[1]()
        if not isinstance(generator, nn.Module):
            raise GradleakError(f"generator factory must return an nn.Module, got {type(generator).__name__}")
    if isinstance(generator, (str, Path)):
        generator = Path(generator).expanduser()
        if not generator.is_file():
            raise GradleakError(f"generator must be an nn.Module or an existing checkpoint file, got {str(generator)!r}")
    elif not isinstance(generator, nn.Module):
        raise GradleakError(f"generator must be an nn.Module or a checkpoint path, got {type(generator).__name__}")
    if latent_dim is not None and (not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim < 1):
        raise GradleakError(f"latent_dim must be a positive integer or None, got {latent_dim!r}")
    return generator, latent_dim


def attacker_generator(generator: nn.Module | Path, latent_dim: int | None, knowledge: AttackerKnowledge,
                       device: torch.device) -> tuple[nn.Module, int]:
    """A private eval-mode copy of the generator on `device`, frozen, and its latent size,
    checked to produce images of the attacked input shape."""
    if isinstance(generator, Path):
        from gradleak.generators import load_generator

        work = load_generator(generator)
    else:
        work = copy.deepcopy(generator)
    work = work.to(device).eval().requires_grad_(False)
    dim = latent_dim if latent_dim is not None else getattr(work, "latent_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise GradleakError("latent_dim must be given for a generator without an integer latent_dim attribute")
    with torch.no_grad():
        probe = work(torch.zeros(1, dim, device=device))
    if tuple(probe.shape[1:]) != tuple(knowledge.input_shape):
        raise GradleakError(f"the generator makes images of shape {tuple(probe.shape[1:])}, the attacked input "
                            f"shape is {tuple(knowledge.input_shape)}; train one at the model's input size")
    return work, dim


def pixel_map(knowledge: AttackerKnowledge, device: torch.device):
    """pixels (N, *shape) in [0, 1] -> model space, through the attacker's box."""
    if knowledge.bounds is None:
        return lambda x: x
    low = torch.tensor(knowledge.bounds[0], dtype=torch.float32, device=device)
    high = torch.tensor(knowledge.bounds[1], dtype=torch.float32, device=device)
    shape = knowledge.input_shape
    if len(shape) == 3 and low.numel() == shape[0]:
        low, high = low.reshape(-1, 1, 1), high.reshape(-1, 1, 1)
    else:
        low, high = low.min(), high.max()
    return lambda x: low + (high - low) * x


class LatentView:
    """Decodes rows of latents (A, B * latent_dim) to data (A, B, *shape) in model space;
    stands in for the engine's `Layout` where a loop reports a restart's data."""

    def __init__(self, generator: nn.Module, latent_dim: int, num_samples: int, to_model) -> None:
        self.generator, self.latent_dim, self.num_samples, self.to_model = generator, latent_dim, num_samples, to_model

    def data(self, rows: torch.Tensor) -> torch.Tensor:
        a = rows.shape[0]
        x = self.to_model(self.generator(rows.reshape(a * self.num_samples, self.latent_dim)))
        return x.reshape(a, self.num_samples, *x.shape[1:])

    def flat(self, rows: torch.Tensor) -> torch.Tensor:
        """The decoded data as the engine's data rows (A, B * prod(shape))."""
        return self.data(rows).reshape(rows.shape[0], -1)


def latent_assumptions(knowledge: AttackerKnowledge) -> tuple[Assumption, ...]:
    """A generator trained on the client's distribution is a prior of level 1 and data of level 2."""
    return tuple(sorted(set(knowledge.assumptions()) | {Assumption.PRIORS, Assumption.DATA_DISTRIBUTION}))


@dataclass(frozen=True)
class LatentProblem:
    """What a latent-space attack searches: the matching problem, the labels it uses, and
    the generator's view from latents to the model's input space."""

    problem: MatchingProblem
    labels: torch.Tensor
    view: "LatentView"
    device: torch.device


def latent_problem(model: nn.Module, update: ClientUpdate, knowledge: AttackerKnowledge,
                   generator: nn.Module | Path, latent_dim: int | None, *, assumed_lr: float,
                   label_rule: str) -> LatentProblem:
    """The set-up `gias` and `ggl` share: problem, labels and the generator on the model's device."""
    device = model_device(model)
    problem = build_problem(model, update, knowledge, assumed_lr=assumed_lr)
    labels = known_or_inferred_labels(problem, knowledge, label_rule)
    gen, dim = attacker_generator(generator, latent_dim, knowledge, device)
    return LatentProblem(problem, labels, LatentView(gen, dim, knowledge.num_samples, pixel_map(knowledge, device)),
                         device)
