"""Audit a Flower federation round by round (needs the `flower` extra: flwr[simulation] 1.41).

`LeakageAudit` wraps any message-based Flower strategy and attacks the updates of the
clients an `AuditSchedule` names; `run_federation` is a ready federation on built-in
data (`gradleak flower`). Flower is imported only when `LeakageAudit` is used or a
federation runs, so the records and configs import without it.
"""

from typing import Any

from gradleak.errors import GradleakError
from gradleak.flower.federation import (
    FederationConfig,
    FederationResult,
    run_federation,
)
from gradleak.flower.records import (
    INSTALL_HINT,
    AuditSchedule,
    ClientAudit,
    ClientData,
    TrainingKeys,
)


def __getattr__(name: str) -> Any:
    if name == "LeakageAudit":
        try:
            from gradleak.flower.strategy import LeakageAudit
        except ImportError as exc:
            if "flwr" not in str(exc):
                raise
            raise GradleakError(f"LeakageAudit needs Flower: {INSTALL_HINT}") from None
        return LeakageAudit
    raise AttributeError(f"module 'gradleak.flower' has no attribute {name!r}")


__all__ = ["AuditSchedule", "ClientAudit", "ClientData", "FederationConfig", "FederationResult", "LeakageAudit",
           "TrainingKeys", "run_federation"]
