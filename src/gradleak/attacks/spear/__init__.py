"""SPEAR (Dimitrov, Baader, Müller & Vechev, NeurIPS 2024): exact batch recovery from a fully
connected ReLU layer. `solve` holds the linear algebra (factorization, proposals, selection,
scales, sampling cost), `attack` the registered attack `Spear` and its certificates.
"""

from gradleak.attacks.spear.attack import Spear, check_spear_layer, output_gradients
from gradleak.attacks.spear.solve import (
    Directions,
    Factorization,
    expected_proposals,
    factorize,
    find_directions,
    greedy_select,
    hit_probability,
    recover_inputs,
    success_probability,
)

__all__ = ["Directions", "Factorization", "Spear", "check_spear_layer", "expected_proposals", "factorize",
           "find_directions", "greedy_select", "hit_probability", "output_gradients", "recover_inputs", "success_probability"]
