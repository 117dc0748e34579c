"""Read-out of trap weights (Boenisch et al., "When the Curious Abandon Honesty", EuroS&P 2023).

Threat model: a malicious server (assumption level 5) that set the first fully connected
layer with `gradleak.server.Trap`. A unit that fired for exactly one sample gives that
sample as its weight-gradient row over its bias gradient; units that fired for several
give mixtures. Candidates that several units agree on are single samples (two mixtures
rarely agree), so the largest groups come first: the analytic inversion of
`gradleak.attacks.analytic_fc`, on the trapped layer, recorded at level 5.
"""

from __future__ import annotations

from gradleak.attacks.analytic_fc import AnalyticFC
from gradleak.records import Assumption, AttackerKnowledge


class TrapReadout(AnalyticFC):
    """The samples trapped alone by units of a trap-weight first layer.

    Args: as `analytic-fc` (min_bias, match_tol, label_rule).
    """

    name = "trap"

    def _assumptions(self, knowledge: AttackerKnowledge) -> tuple[Assumption, ...]:
        return tuple(sorted(set(knowledge.assumptions()) | {Assumption.MALICIOUS}))
