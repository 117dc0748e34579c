"""Analyses of a model that need no attack: R-GAP's rank analysis, exact-leakage certificates
(SPEAR, R-GAP) per batch size, and the SoK's IGSA."""

from gradleak.analysis.exact import BatchCertificate, ExactReport, exact_leakage
from gradleak.analysis.igsa import IGSAResult, igsa
from gradleak.analysis.rank import LayerRank, RankReport, rank_analysis

__all__ = ["BatchCertificate", "ExactReport", "IGSAResult", "LayerRank", "RankReport", "exact_leakage", "igsa", "rank_analysis"]
