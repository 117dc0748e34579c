"""Analyses of a model that need no attack: R-GAP's rank analysis."""

from gradleak.analysis.rank import LayerRank, RankReport, rank_analysis

__all__ = ["LayerRank", "RankReport", "rank_analysis"]
