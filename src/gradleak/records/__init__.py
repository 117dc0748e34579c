"""Typed, frozen records that cross every boundary of the pipeline.

A client produces a `ClientUpdate`; an attack receives it with an `AttackerKnowledge`
and returns a `Reconstruction`; the audit compares it with the truth and writes an
`AuditResult`. Tensors inside records are never mutated after construction. This is the
ground floor: it imports nothing of gradleak but errors and checks.
"""

from gradleak.records.client import (
    LOSSES,
    MODEL_MODES,
    ClientUpdate,
    LocalTraining,
    PrivacySpent,
    Protocol,
    check_loss,
    check_model_mode,
)
from gradleak.records.knowledge import Assumption, AttackerKnowledge, LabelKnowledge
from gradleak.records.results import (
    AuditResult,
    ImageMetrics,
    Reconstruction,
    SampleCertificate,
    ServerOutcome,
)
from gradleak.records.verdict import LeakVerdict, Verdict

__all__ = ["Assumption", "AttackerKnowledge", "AuditResult", "ClientUpdate", "ImageMetrics", "LOSSES", "LabelKnowledge", "LeakVerdict",
           "LocalTraining", "MODEL_MODES", "PrivacySpent", "Protocol", "Reconstruction", "SampleCertificate", "ServerOutcome", "Verdict", "check_loss",
           "check_model_mode"]
