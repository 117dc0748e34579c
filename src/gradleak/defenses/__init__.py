"""Defenses, registered by name: each one class with one verb, `transform`.

Two kinds: post-processing defenses transform a finished update; training defenses
(`dpsgd`, `ats`) change how the client trains and may only open a chain.
`parse_defense("topk:keep=0.1,scope=global")` builds one from its CLI spec;
`build_defense(["dpsgd:noise_multiplier=1", "qsgd:bits=4"])` builds the chain of several.
"""

from __future__ import annotations

from typing import Sequence

from gradleak.defenses.ats import ATS
from gradleak.defenses.base import ClientBatch, Defense, NotModeled, TrainingDefense
from gradleak.defenses.chain import Chain
from gradleak.defenses.clip import NormClip, ValueClip
from gradleak.defenses.dpsgd import DPSGD
from gradleak.defenses.noise import GaussianNoise, LaplacianNoise
from gradleak.defenses.quantize import QSGD, SignSGD
from gradleak.defenses.soteria import Soteria
from gradleak.defenses.sparsify import RandomPrune, TopK
from gradleak.registry import Registry

DEFENSES: Registry[type[Defense]] = Registry("defense")
DEFENSES.add("ats", ATS, "training: on images augmented by an AutoAugment-style policy such as 3-1-7 "
             "(Gao et al., CVPR 2021)")
DEFENSES.add("dpsgd", DPSGD, "training: DP-SGD, per-sample clipping + Gaussian noise, (epsilon, delta) by Opacus "
             "(Abadi et al., CCS 2016)")
DEFENSES.add("gaussian", GaussianNoise, "add N(0, sigma^2) to every entry (SoK Appendix C, Du et al. 2024)")
DEFENSES.add("laplacian", LaplacianNoise, "add Laplace(0, b) to every entry (Balunovic et al., ICLR 2022)")
DEFENSES.add("normclip", NormClip, "scale the whole update to L2 norm <= max_norm (Abadi et al., CCS 2016)")
DEFENSES.add("prune", RandomPrune, "zero each entry with probability rate (Balunovic et al., ICLR 2022)")
DEFENSES.add("qsgd", QSGD, "unbiased stochastic quantization to 2^bits - 1 levels (Alistarh et al., NeurIPS 2017)")
DEFENSES.add("signsgd", SignSGD, "share signs times the tensor's mean |g| (Bernstein et al., ICML 2018)")
DEFENSES.add("soteria", Soteria, "prune the defended FC layer's update columns of low-score representation units "
             "(Sun et al., CVPR 2021)")
DEFENSES.add("topk", TopK, "keep the largest-magnitude fraction of entries (Zhu et al., NeurIPS 2019)")
DEFENSES.add("valueclip", ValueClip, "clamp every entry to [-bound, bound], flat clipping (SoK, Du et al. 2024)")


def parse_defense(spec: str) -> Defense:
    """A defense from `name` or `name:key=value,key=value` (values read as YAML scalars)."""
    return DEFENSES.from_spec(spec, "gaussian:sigma=0.1")


def build_defense(specs: Sequence[str | Defense]) -> Chain:
    """The chain of defenses named by `specs` (strings or `Defense` objects), in order."""
    return Chain([s if isinstance(s, Defense) else parse_defense(s) for s in specs])


__all__ = [
    "ATS", "Chain", "ClientBatch", "DEFENSES", "DPSGD", "Defense", "GaussianNoise", "TrainingDefense", "LaplacianNoise", "NormClip", "NotModeled", "Soteria", "QSGD",
    "RandomPrune", "SignSGD", "TopK", "ValueClip", "build_defense", "parse_defense",
]
