"""GGL (Li et al. 2022): seeded CMA-ES, and a non-differentiable defense inside the loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_gias import problem

from gradleak.attacks import ATTACKS
from gradleak.defenses import parse_defense
from gradleak.errors import GradleakError
from gradleak.metrics.functional import psnr


def test_deterministic_under_a_seed_and_leaves_numpys_generator_alone():
    gen, model, update, knowledge, _ = problem(2)
    attack = ATTACKS.create("ggl", {"generator": gen, "budget": 40, "restarts": 2})
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = attack.reconstruct(model, update, knowledge, seed=4)
    assert np.array_equal(np.random.get_state()[1], state)
    b = attack.reconstruct(model, update, knowledge, seed=4)
    c = attack.reconstruct(model, update, knowledge, seed=5)
    assert torch.equal(a.data, b.data) and a.restart_losses == b.restart_losses
    assert not torch.equal(a.data, c.data)
    assert a.iterations >= 80 and len(a.restart_losses) == 2


def test_signsgd_in_the_loop_needs_no_surrogate():
    gen, model, update, knowledge, images = problem(1)
    defense = parse_defense("signsgd")
    shared = defense.transform(update, seed=3)
    attack = ATTACKS.create("ggl", {"generator": gen, "budget": 300})
    blind = attack.reconstruct(model, shared, knowledge, seed=0)
    aware = attack.reconstruct(model, shared, dataclasses.replace(knowledge, defense=defense), seed=0)
    assert float(psnr(blind.data, images)) < 15  # signs read as a gradient mislead the search
    assert float(psnr(aware.data, images)) > 30  # the same search, the defense applied to its predictions


def test_bad_options_name_themselves():
    gen = problem(1)[0]
    with pytest.raises(GradleakError, match="distance"):
        ATTACKS.create("ggl", {"generator": gen, "distance": "l1"})
    with pytest.raises(GradleakError, match="population"):
        ATTACKS.create("ggl", {"generator": gen, "population": 1})
