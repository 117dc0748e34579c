"""ATS (Gao et al., CVPR 2021): train on images transformed by a searched augmentation policy.

`ATS("3-1-7")` is the defense; `parse_policy`, `TRANSFORMATIONS` and `PAPER_POLICIES` the
search space and the paper's policies; `privacy_score`, `accuracy_score` and
`search_policies` the search; `ops` the AutoAugment operations in plain PyTorch.
"""

from gradleak.defenses.ats.defense import ATS
from gradleak.defenses.ats.ops import LEVEL_RANGES, OPS, magnitude_for
from gradleak.defenses.ats.policies import (
    PAPER_POLICIES,
    PAPER_POLICY_SETTINGS,
    TRANSFORMATIONS,
    VERIFIED_POLICIES,
    Policy,
    Transformation,
    parse_policy,
    sample_policies,
)
from gradleak.defenses.ats.score import (
    ScoredPolicy,
    accuracy_score,
    privacy_score,
    search_policies,
)

__all__ = [
    "ATS", "LEVEL_RANGES", "OPS", "PAPER_POLICIES", "PAPER_POLICY_SETTINGS", "Policy", "ScoredPolicy",
    "TRANSFORMATIONS", "Transformation", "VERIFIED_POLICIES", "accuracy_score", "magnitude_for", "parse_policy",
    "privacy_score", "sample_policies", "search_policies",
]
