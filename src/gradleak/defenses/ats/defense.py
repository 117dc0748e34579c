"""The ATS defense: the client trains on its batch transformed by a searched policy.

Gao et al., "Privacy-preserving Collaborative Learning with Automatic Transformation Search",
CVPR 2021. The shared update is the client's update recomputed on T(x): the policy's
transformations applied to every image (`gradleak.defenses.ats.policies`). An attacker who
inverts it recovers at best T(x); `ATS.augmented` gives that batch so experiments can also
score a reconstruction against it (ATS's adaptive-attack evaluation).

Pixel space. The client's images are in model space and the ops need [0, 1] pixels:
- with `normalization` (the dataset's), the batch is denormalized, transformed and
  normalized again: exact;
- without it, each channel is mapped affinely by the batch's own min and max to [0, 1] and
  back. That is exact for images already in [0, 1] or normalized per channel whose batch
  reaches pixel values 0 and 1 in every channel; otherwise it is an approximation (e.g. a
  translation fills with the batch's darkest value of each channel, Brightness scales about it).
For FedAvg the batch is transformed once and kept for all local steps.
"""

from __future__ import annotations

import torch

from gradleak.checks import check_seed
from gradleak.client import simulate_client
from gradleak.data.base import Normalization
from gradleak.defenses.ats.policies import Policy, parse_policy
from gradleak.defenses.base import ClientBatch, TrainingDefense
from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate


class ATS(TrainingDefense):
    """Train on the batch transformed by `policy` ("3-1-7"); a training defense (first in a chain)."""

    name = "ats"
    _spec_fields = ("policy",)

    def __init__(self, policy: str = "3-1-7", *, normalization: Normalization | None = None) -> None:
        if isinstance(policy, int) and not isinstance(policy, bool):
            policy = str(policy)  # the CLI's YAML reads "ats:policy=3" as the integer 3
        self._policy: Policy = parse_policy(policy)
        self.policy = str(self._policy)
        if normalization is not None and not isinstance(normalization, Normalization):
            raise GradleakError(f"normalization must be a Normalization or None, got {type(normalization).__name__}")
        self.normalization = normalization

    def augmented(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """The batch (model space) that `transform(..., seed=seed)` trains on for `images`
        (inside a Chain, pass the seed the chain gave this link)."""
        policy_seed, _ = _seeds(torch.Generator().manual_seed(check_seed(seed)))
        return self._augment(images, policy_seed)

    def train(self, client: ClientBatch, seed: int) -> ClientUpdate:
        policy_seed, client_seed = _seeds(torch.Generator().manual_seed(check_seed(seed)))
        images = self._augment(client.images, policy_seed)
        return simulate_client(client.model, images, client.labels, client.training, model_mode=client.model_mode,
                               seed=client_seed)

    def _augment(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
            got = (f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                   else type(images).__name__)
            raise GradleakError(f"images must be a float tensor (N, C, H, W), got {got}")
        images = images.detach()
        generator = torch.Generator().manual_seed(seed)
        if self.normalization is not None:
            pixels = self.normalization.denormalize(images).clamp(0, 1)
            return self.normalization.normalize(self._policy.apply(pixels, generator))
        lo = images.amin(dim=(0, 2, 3), keepdim=True)
        span = images.amax(dim=(0, 2, 3), keepdim=True) - lo
        span = torch.where(span > 0, span, torch.ones_like(span))  # a constant channel stays constant
        return self._policy.apply((images - lo) / span, generator) * span + lo


def _seeds(generator: torch.Generator) -> tuple[int, int]:
    """The policy's seed, then the client's (mini-batch shuffling), from one generator."""
    a, b = torch.randint(0, 2**62, (2,), generator=generator, device=generator.device).tolist()
    return int(a), int(b)
