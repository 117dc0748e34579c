"""Analyses of a model that need no attack: R-GAP's rank analysis and the SoK's IGSA."""

from gradleak.analysis.igsa import IGSAResult, igsa
from gradleak.analysis.rank import LayerRank, RankReport, rank_analysis

__all__ = ["IGSAResult", "LayerRank", "RankReport", "igsa", "rank_analysis"]
