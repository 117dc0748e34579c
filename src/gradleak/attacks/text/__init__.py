"""Attacks on text updates (token sequences), registered in `TEXT_ATTACKS`.

A separate registry from the image `ATTACKS`: these attacks return token sequences
(`TextReconstruction`), not tensors in an image input space, so the image registry's
invariant tests (which build image problems for every member) do not apply to them.
"""

from gradleak.attacks.text.base import TextAttack
from gradleak.attacks.text.dager import Dager
from gradleak.registry import Registry

TEXT_ATTACKS: Registry[type[TextAttack]] = Registry("text attack")
TEXT_ATTACKS.add("dager", Dager, "DAGER: exact batch recovery by span checks on attention-layer gradients "
                 "(Petrov et al. 2024)")

__all__ = ["Dager", "TEXT_ATTACKS", "TextAttack"]
