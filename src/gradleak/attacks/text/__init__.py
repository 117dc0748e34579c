"""Attacks on text updates (token sequences), registered in `TEXT_ATTACKS`.

A separate registry from the image `ATTACKS`: these attacks return token sequences
(`TextReconstruction`), not tensors in an image input space, so the image registry's
invariant tests (which build image problems for every member) do not apply to them.
"""

from gradleak.attacks.text.base import TextAttack
from gradleak.attacks.text.dager import Dager
from gradleak.attacks.text.lamp import Lamp
from gradleak.attacks.text.tag import Tag
from gradleak.registry import Registry

TEXT_ATTACKS: Registry[type[TextAttack]] = Registry("text attack")
TEXT_ATTACKS.add("dager", Dager, "DAGER: exact batch recovery by span checks on attention-layer gradients "
                 "(Petrov et al. 2024)")
TEXT_ATTACKS.add("lamp", Lamp, "LAMP: TAG's continuous steps alternated with reorderings scored by a language-model "
                 "prior (Balunovic et al. 2022)")
TEXT_ATTACKS.add("tag", Tag, "TAG: L2 + L1 gradient matching on continuous embeddings, nearest-token projection "
                 "(Deng et al. 2021)")

__all__ = ["TEXT_ATTACKS", "Dager", "Lamp", "Tag", "TextAttack"]
