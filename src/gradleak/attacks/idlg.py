"""iDLG: improved Deep Leakage from Gradients (Zhao et al. 2020).

Threat model: as DLG (assumption level 0). The label is read off the last layer's
weight gradient (the row with the negative sum, exact for one sample with
non-negative features and cross-entropy); for a batch a count-aware rule is used
(`gradleak.attacks.engine.labels`). Then DLG runs on the data alone with hard labels.
"""

from __future__ import annotations

from gradleak.attacks.dlg import DLG
from gradleak.attacks.engine.labels import LABEL_RULES
from gradleak.attacks.engine.restarts import known_or_inferred_labels
from gradleak.records import LabelKnowledge


class IDLG(DLG):
    """DLG with labels recovered analytically first.

    Args: as `DLG`, plus `label_rule`, a name from `gradleak.attacks.engine.labels.LABEL_RULES`
    ("auto": iDLG for one sample, the count-aware rule for a batch).
    """

    name = "idlg"
    label_mode = LabelKnowledge.INFERRED

    def __init__(self, *, label_rule: str = "auto", **options) -> None:
        super().__init__(**options)
        self.label_rule = LABEL_RULES.entry(label_rule).name

    def _fixed_labels(self, problem, knowledge):
        return known_or_inferred_labels(problem, knowledge, self.label_rule)
