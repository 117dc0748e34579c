"""gradleak: measure how much private data a federated-learning client leaks through its updates."""

__version__ = "0.1.0"

from gradleak.api import evaluate, reconstruct  # noqa: E402
from gradleak.records import (  # noqa: E402
    AttackerKnowledge,
    AuditResult,
    ClientUpdate,
    ImageMetrics,
    LabelKnowledge,
    LocalTraining,
    Protocol,
    Reconstruction,
)

__all__ = [
    "AttackerKnowledge",
    "AuditResult",
    "ClientUpdate",
    "ImageMetrics",
    "LabelKnowledge",
    "LocalTraining",
    "Protocol",
    "Reconstruction",
    "evaluate",
    "reconstruct",
    "__version__",
]
