"""gradleak: measure how much private data a federated-learning client leaks through its updates.

The top-level names load on first use, so `import gradleak.records` (or the CLI) does
not pull the whole library in.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from gradleak.io import package_version

__version__ = package_version()

# name -> module that defines it
_EXPORTS = {
    "reconstruct": "gradleak.api", "evaluate": "gradleak.api", "as_update": "gradleak.api", "serve": "gradleak.api",
    "AttackerKnowledge": "gradleak.records", "AuditResult": "gradleak.records", "ClientUpdate": "gradleak.records",
    "ImageMetrics": "gradleak.records", "LabelKnowledge": "gradleak.records", "LocalTraining": "gradleak.records",
    "Protocol": "gradleak.records", "Reconstruction": "gradleak.records",
    "AuditConfig": "gradleak.pipelines.config", "run_audit": "gradleak.pipelines.audit",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gradleak' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted([*_EXPORTS, "__version__"])
