"""Attacks, registered by name: each one class with one verb, `reconstruct`.

One module per attack, named after its paper; what they share (the matching problem,
the restart loops, objectives, label rules) lives in `engine/`.
"""

from gradleak.attacks.analytic_fc import AnalyticFC
from gradleak.attacks.base import Attack, OptimizationAttack, Progress, ProgressCallback
from gradleak.attacks.baselines import CosineMatching, L1Matching, L2Matching
from gradleak.attacks.bayes import Bayes
from gradleak.attacks.dimitrov import DimitrovFedAvg
from gradleak.attacks.dlg import DLG
from gradleak.attacks.fishing import FishingReadout
from gradleak.attacks.ggl import GGL
from gradleak.attacks.gias import GIAS
from gradleak.attacks.idlg import IDLG
from gradleak.attacks.ig import InvertingGradients
from gradleak.attacks.imprint import ImprintReadout
from gradleak.attacks.rgap import RGAP
from gradleak.attacks.spear import Spear
from gradleak.attacks.spear.deep import SpearDeep
from gradleak.attacks.trap import TrapReadout
from gradleak.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack")
ATTACKS.add("dlg", DLG, "Deep Leakage from Gradients: joint data + soft label, L-BFGS, L2 (Zhu et al. 2019)")
ATTACKS.add("idlg", IDLG, "iDLG: label from the last-layer gradient, then DLG on the data (Zhao et al. 2020)")
ATTACKS.add("ig", InvertingGradients, "Inverting Gradients: cosine + TV, signed Adam, box (Geiping et al. 2020)")
ATTACKS.add("analytic-fc", AnalyticFC,
            "exact inversion of a fully connected first layer: weight-gradient row / bias gradient (Phong et al. 2018)")
ATTACKS.add("bayes", Bayes, "Bayes-optimal: the known defense's p(g|x) + TV/range prior, Adam (Balunovic et al. 2022)")
ATTACKS.add("l2", L2Matching, "the Bayes paper's L2 baseline: squared distance + the same prior and optimizer")
ATTACKS.add("l1", L1Matching, "the Bayes paper's L1 baseline: absolute distance + the same prior and optimizer")
ATTACKS.add("cosine", CosineMatching, "the Bayes paper's cosine baseline: 1 - cosine + the same prior and optimizer")
ATTACKS.add("imprint", ImprintReadout, "read-out of a malicious server's imprint block: the samples alone in a bin "
            "(Fowl et al., ICLR 2022; level 5)")
ATTACKS.add("fishing", FishingReadout, "read-out of a malicious server's class fishing: inverting gradients on the "
            "target class alone (Wen et al., ICML 2022; level 5)")
ATTACKS.add("trap", TrapReadout, "read-out of a malicious server's trap weights: samples that fired a first-layer "
            "unit alone (Boenisch et al., EuroS&P 2023; level 5)")
ATTACKS.add("dimitrov", DimitrovFedAvg,
            "FedAvg: simulate the client's epochs, per-epoch sets tied by an order-invariant prior (Dimitrov et al. 2022)")
ATTACKS.add("gias", GIAS, "GIAS: latent search in a generator, then its weights near the pretrained ones "
            "(Jeon et al. 2021)")
ATTACKS.add("ggl", GGL, "GGL: CMA-ES over a generator's latents, the known defense inside the loop "
            "(Li et al. 2022)")
ATTACKS.add("rgap", RGAP, "R-GAP: closed-form recursive inversion of bias-free LeakyReLU chains (Zhu & Blaschko 2021)")
ATTACKS.add("spear", Spear, "SPEAR: exact batch recovery from a fully connected ReLU first layer, certified per sample "
            "(Dimitrov et al. 2024)")
ATTACKS.add("spear-deep", SpearDeep, "SPEAR on a deeper FC ReLU layer's input features, then images matched to them")

__all__ = [
    "ATTACKS", "AnalyticFC", "Attack", "Bayes", "CosineMatching", "DLG", "DimitrovFedAvg", "FishingReadout",
    "GGL", "GIAS", "IDLG", "ImprintReadout", "InvertingGradients", "L1Matching", "L2Matching",
    "OptimizationAttack", "Progress", "ProgressCallback", "RGAP", "Spear", "TrapReadout",
]
