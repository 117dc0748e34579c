"""iDLG: improved Deep Leakage from Gradients (Zhao et al. 2020).

Threat model: as DLG (assumption level 0). The label is read off the last layer's
weight gradient (the row with the negative sum, exact for one sample with
non-negative features and cross-entropy); for a batch a count-aware rule is used
(`gradleak.attacks.labels`). Then DLG runs on the data alone with hard labels.
"""

from __future__ import annotations

from gradleak.attacks.base import known_or_inferred_labels
from gradleak.attacks.dlg import DLG
from gradleak.records import LabelKnowledge


class IDLG(DLG):
    """DLG with labels recovered analytically first; same hyperparameters as DLG."""

    name = "idlg"
    label_mode = LabelKnowledge.INFERRED

    def _labels(self, problem, knowledge):
        return known_or_inferred_labels(problem, knowledge), None
