"""ATS's search space: 50 AutoAugment transformations, and policies of up to 3 of them.

Gao et al., "Privacy-preserving Collaborative Learning with Automatic Transformation Search",
CVPR 2021. A policy is written as the indices of its transformations joined by "-" ("3-1-7":
transformation 3, then 1, then 7); an index may repeat ("43-18-18").

Provenance of `TRANSFORMATIONS` (checked offline against the authors' public release,
github.com/gaow0007/ATSPrivacy, policy.py and autoaugment.py; the paper's PDF itself could not
be read here): the order, ops and probabilities are AutoAugment's 25 CIFAR-10 sub-policies
(Cubuk et al., CVPR 2019) split into their 50 single operations; the levels are the release's,
several lower than AutoAugment's (e.g. index 6 is ShearY at level 2 where AutoAugment has 8).
As in the release, the probability is recorded but not drawn: every transformation of a policy
is applied to every image (`Transformation.probability` is informational). The release also
runs RandomCrop(32, padding=4) and a horizontal flip before the policy; that standard
augmentation is not part of `Policy`.

Provenance of `PAPER_POLICIES` (the policies the paper reports in its main table): 3-1-7 and
43-18-18 (ResNet20, CIFAR-100) and 19-15-45 and 2-43-21 (ResNet20, Fashion-MNIST) are named in
the text of the ReScience C reproduction (Taboada Warmerdam et al., 2022); 3-1-7 and 43-18-18
also in the authors' benchmark scripts. 21-13-3 and 7-4-15 (ConvNet, CIFAR-100) and 42-28-42
and 14-48-48 (ConvNet, Fashion-MNIST) come only from that reproduction's experiment script,
which reruns the paper's table; they are not verified against the paper's text. The paper's
"hybrid" policies (e.g. 3-1-7+43-18-18: one of the two chosen per image) are not modelled.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping

import torch

from gradleak.defenses.ats.ops import OPS, magnitude_for
from gradleak.defenses.base import check_seed
from gradleak.errors import GradleakError

MAX_LENGTH = 3


@dataclass(frozen=True)
class Transformation:
    """One AutoAugment operation at a level 0..9 (`probability` is AutoAugment's, not applied)."""

    op: str
    probability: float
    level: int

    def __post_init__(self) -> None:
        magnitude_for(self.op, self.level)  # names a bad op or level
        if not isinstance(self.probability, (int, float)) or not 0 <= self.probability <= 1:
            raise GradleakError(f"probability must be a number in [0, 1], got {self.probability!r}")

    @property
    def magnitude(self) -> float:
        return magnitude_for(self.op, self.level)

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return OPS[self.op](images, self.magnitude, generator)


TRANSFORMATIONS: tuple[Transformation, ...] = tuple(Transformation(op, p, level) for op, p, level in (
    ("Invert", 0.1, 7), ("Contrast", 0.2, 6), ("Rotate", 0.7, 2), ("TranslateX", 0.3, 9),  # 0-3
    ("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3), ("ShearY", 0.5, 2), ("TranslateY", 0.7, 2),  # 4-7
    ("AutoContrast", 0.5, 5), ("Equalize", 0.9, 2), ("ShearY", 0.2, 5), ("Posterize", 0.3, 5),  # 8-11
    ("Color", 0.4, 3), ("Brightness", 0.6, 5), ("Sharpness", 0.3, 9), ("Brightness", 0.7, 9),  # 12-15
    ("Equalize", 0.6, 5), ("Equalize", 0.5, 1), ("Contrast", 0.6, 7), ("Sharpness", 0.6, 5),  # 16-19
    ("Color", 0.7, 5), ("TranslateX", 0.5, 5), ("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8),  # 20-23
    ("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6), ("Brightness", 0.9, 6), ("Color", 0.2, 8),  # 24-27
    ("Solarize", 0.5, 0), ("Invert", 0.0, 0), ("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0),  # 28-31
    ("Equalize", 0.2, 8), ("Equalize", 0.6, 4), ("Color", 0.9, 5), ("Equalize", 0.6, 5),  # 32-35
    ("AutoContrast", 0.8, 4), ("Solarize", 0.2, 4), ("Brightness", 0.1, 3), ("Color", 0.7, 0),  # 36-39
    ("Solarize", 0.4, 1), ("AutoContrast", 0.9, 0), ("TranslateY", 0.9, 3), ("TranslateY", 0.7, 3),  # 40-43
    ("AutoContrast", 0.9, 1), ("Solarize", 0.8, 1), ("Equalize", 0.8, 5), ("Invert", 0.1, 0),  # 44-47
    ("TranslateY", 0.7, 3), ("AutoContrast", 0.9, 1),  # 48-49
))

PAPER_POLICY_SETTINGS: Mapping[str, tuple[str, ...]] = {
    "ResNet20/CIFAR-100": ("3-1-7", "43-18-18"),
    "ConvNet/CIFAR-100": ("21-13-3", "7-4-15"),
    "ResNet20/Fashion-MNIST": ("19-15-45", "2-43-21"),
    "ConvNet/Fashion-MNIST": ("42-28-42", "14-48-48"),
}
PAPER_POLICIES: tuple[str, ...] = tuple(p for ps in PAPER_POLICY_SETTINGS.values() for p in ps)
VERIFIED_POLICIES: tuple[str, ...] = ("3-1-7", "43-18-18", "19-15-45", "2-43-21")  # see the module docstring


@dataclass(frozen=True)
class Policy:
    """Transformations applied in order, each to every image ("3-1-7": 3, then 1, then 7)."""

    indices: tuple[int, ...]

    def __post_init__(self) -> None:
        indices = tuple(self.indices)
        if not 1 <= len(indices) <= MAX_LENGTH:
            raise GradleakError(f"policy must have 1 to {MAX_LENGTH} transformation indices, got {len(indices)}")
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(TRANSFORMATIONS):
                raise GradleakError(f"policy indices must be integers in 0..{len(TRANSFORMATIONS) - 1}, "
                                    f"got {i!r} in {indices}")
        object.__setattr__(self, "indices", indices)

    @property
    def transformations(self) -> tuple[Transformation, ...]:
        return tuple(TRANSFORMATIONS[i] for i in self.indices)

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The transformed batch (a new tensor): images (N, C, H, W) in [0, 1] pixel space."""
        for t in self.transformations:
            images = t.apply(images, generator)
        return images

    def __str__(self) -> str:
        return "-".join(str(i) for i in self.indices)


def parse_policy(policy: str | Policy) -> Policy:
    """`Policy` from its notation "3-1-7" (1 to 3 indices in 0..49)."""
    if isinstance(policy, Policy):
        return policy
    expected = f"1 to {MAX_LENGTH} transformation indices in 0..{len(TRANSFORMATIONS) - 1} joined by '-', like '3-1-7'"
    if not isinstance(policy, str) or not policy.strip():
        raise GradleakError(f"policy must be {expected}; got {policy!r}")
    parts = [p.strip() for p in policy.strip().split("-")]
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise GradleakError(f"policy must be {expected}; got {policy!r}")
    if len(parts) > MAX_LENGTH:
        raise GradleakError(f"policy must be {expected}; got {len(parts)} indices in {policy!r}")
    bad = [p for p in parts if int(p) >= len(TRANSFORMATIONS)]
    if bad:
        raise GradleakError(f"policy must be {expected}; index {bad[0]} of {policy!r} is out of range")
    return Policy(tuple(int(p) for p in parts))


def sample_policies(count: int, *, seed: int = 0) -> tuple[Policy, ...]:
    """`count` random candidates as ATS samples them: each of 3 slots holds a uniformly drawn
    transformation or nothing (1/51 each), an empty draw is drawn again."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise GradleakError(f"count must be an integer >= 1, got {count!r}")
    rng = random.Random(check_seed(seed))
    out: list[Policy] = []
    while len(out) < count:
        picks = [rng.randrange(-1, len(TRANSFORMATIONS)) for _ in range(MAX_LENGTH)]
        picks = [i for i in picks if i >= 0]
        if picks:
            out.append(Policy(tuple(picks)))
    return tuple(out)
