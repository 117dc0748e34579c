"""Pipelines: the audit, the utility run and the R-GAP demo, end to end, and the report
writer they share. The faces (`api`, `cli`, `sweep`, `flower`) call these."""

from gradleak.pipelines.audit import AuditRun, run_audit
from gradleak.pipelines.config import AuditConfig
from gradleak.pipelines.utility import UtilityConfig, UtilityResult, run_utility

__all__ = ["AuditConfig", "AuditRun", "UtilityConfig", "UtilityResult", "run_audit", "run_utility"]
