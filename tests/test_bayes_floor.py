"""The Bayes family's L-BFGS recipe (issue 20, part 4): it beats the mean-colour floor
without a defense where the Adam recipe did not, its objective normalization is one
constant factor, the optimizer option is checked, and the Laplacian smoothing and the
L2 warm-up are what they say."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_lenet

from gradleak.attacks import ATTACKS
from gradleak.attacks.engine.objectives import normalized
from gradleak.client import simulate_client
from gradleak.defenses.conditionals import Gaussian, Identity, Laplace, Masked, smoothed
from gradleak.errors import GradleakError
from gradleak.metrics.evaluate import flat_baseline_psnr
from gradleak.records import AttackerKnowledge, LabelKnowledge

SHAPE = (3, 8, 8)


def _case():
    """A smooth 8x8 image (upsampled 2x2 colours) on an untrained sigmoid CNN."""
    model = tiny_lenet(size=8, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(1, 3, 2, 2, generator=gen), size=8, mode="bilinear", align_corners=True)
    y = torch.tensor([3])
    knowledge = AttackerKnowledge(num_samples=1, input_shape=SHAPE, num_classes=10,
                                  label_knowledge=LabelKnowledge.GIVEN, labels=y,
                                  bounds=((0.0,) * 3, (1.0,) * 3))
    return model, x, simulate_client(model, x, y), knowledge


def _psnr(a, b):
    return float(10 * torch.log10(1 / ((a.clamp(0, 1) - b) ** 2).mean()))


@pytest.mark.parametrize("name", ["bayes", "l2"])
def test_lbfgs_default_beats_the_mean_colour_floor_without_a_defense(name):
    model, x, update, knowledge = _case()
    attack = ATTACKS.get(name)(iterations=60)  # the default optimizer and prior weight, fewer steps
    assert attack.optimizer == "lbfgs" and attack.tv == type(attack).default_tv
    rec = attack.reconstruct(model, update, knowledge, seed=0)
    floor = float(flat_baseline_psnr(x)[0])
    assert _psnr(rec.data, x) > floor + 10, (_psnr(rec.data, x), floor)


def test_adam_is_kept_as_the_paper_s_recipe():
    model, _, update, knowledge = _case()
    attack = ATTACKS.get("bayes")(optimizer="adam", iterations=30)
    assert attack.lr == 0.1 and attack.iterations == 30
    rec = attack.reconstruct(model, update, knowledge, seed=0)
    assert rec.status == "ok" and rec.loss_history[-1] < rec.loss_history[0]
    assert ATTACKS.get("l2")(optimizer="adam").iterations == 1000
    assert ATTACKS.get("l2")().iterations == 200 and ATTACKS.get("l2")().lr == 1.0


def test_unknown_optimizer_is_refused_in_one_line():
    with pytest.raises(GradleakError) as info:
        ATTACKS.get("bayes")(optimizer="sgd")
    message = str(info.value)
    assert "\n" not in message
    assert "optimizer" in message and "'lbfgs'" in message and "'adam'" in message and "'sgd'" in message
    with pytest.raises(GradleakError, match="warmup"):
        ATTACKS.get("l1")(warmup=-1)


def test_normalization_is_one_constant_factor():
    def objective(rows):
        return 1e6 * ((rows - 2.0) ** 2).sum(1) + 3e6

    start = torch.tensor([[0.0, 0.0], [1.0, 3.0]])
    scaled = normalized(objective, start)
    assert float(scaled(start).mean()) == pytest.approx(1.0)
    rows = torch.randn(5, 2)
    ratio = scaled(rows) / objective(rows)
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-6)  # same argmin, same order of restarts
    assert int(scaled(rows).argmin()) == int(objective(rows).argmin())


def test_bayes_with_a_scaled_conditional_takes_the_same_path():
    """A Gaussian conditional of sigma 1/2 is Identity x 4: with the prior weight x 4 the
    objective is 4x, normalization takes that out, the reconstruction is the same."""
    model, _, update, knowledge = _case()

    class Quarter(type(ATTACKS.get("bayes")())):
        def _distance(self, update, knowledge):
            return Gaussian(0.5)

    one = ATTACKS.get("bayes")(iterations=5, tv=0.01).reconstruct(model, update, knowledge, seed=0)
    four = Quarter(iterations=5, tv=0.04).reconstruct(model, update, knowledge, seed=0)
    # unnormalized, the second's losses would read 4x the first's
    assert one.loss_history[0] == pytest.approx(four.loss_history[0], rel=1e-5)
    assert one.loss_history[-1] == pytest.approx(four.loss_history[-1], rel=0.1)
    assert torch.allclose(one.data, four.data, atol=2e-3)  # L-BFGS's float path differs a little


def test_smoothed_laplace_is_the_pseudo_huber_inside_masks():
    r = torch.tensor([0.0, 1e-3, 1.0])
    exact, smooth = Laplace(0.1), smoothed(Laplace(0.1), 0.5)
    assert smooth == Laplace(0.1, delta=0.05)
    assert float(smooth.log_density(r)[0]) == 0.0
    assert float(smooth.log_density(r)[2]) == pytest.approx(float(exact.log_density(r)[2]) + 0.5, rel=0.01)
    masked = smoothed(Masked(0.5, Laplace(0.2)), 1.0)
    assert masked.inner == Laplace(0.2, delta=0.2)
    assert smoothed(Identity(), 1.0) == Identity() and smoothed(Laplace(0.1), 0.0) == Laplace(0.1)


def test_the_warmup_starts_the_attack_nearer_the_image():
    model, _, update, knowledge = _case()
    cold = ATTACKS.get("l1")(iterations=3).reconstruct(model, update, knowledge, seed=0)
    warm = ATTACKS.get("l1")(iterations=3, warmup=20).reconstruct(model, update, knowledge, seed=0)
    assert warm.loss_history[0] < 0.5 * cold.loss_history[0]


def test_the_bayes_warmup_keeps_the_masks_and_swaps_laplace_for_its_gaussian_twin():
    from gradleak.defenses.conditionals import gaussianized

    twin = gaussianized(Masked(0.5, Laplace(0.2)))
    assert twin.inner == Gaussian(0.2 * 2**0.5) and twin.keep == 0.5
    assert gaussianized(Identity()) == Identity()
    _, _, update, knowledge = _case()
    from gradleak.defenses import build_defense

    defense = build_defense(["prune:rate=0.5", "laplacian:b=0.01"])
    known = AttackerKnowledge(**{**knowledge.__dict__, "defense": defense, "defense_seed": 3})
    shared = defense.transform(update, seed=3)
    bayes = ATTACKS.get("bayes")()
    assert isinstance(bayes._warmup_distance(shared, known).inner, Gaussian)
    assert ATTACKS.get("l1")()._warmup_distance(shared, known) == "l2"


def test_bayes_prior_weight_follows_the_known_conditional():
    """A Bayes attacker that knows Laplace(b) or Gaussian(sigma) noise scales the tuned
    baseline weight by the conditional's factor (L1 / b, L2 / (2 sigma^2)), masks or not;
    an explicit tv wins, and without a known defense the no-defense weight stays."""
    import dataclasses

    from gradleak.attacks.bayes import L1_TV, L2_TV
    from gradleak.defenses import build_defense

    _, _, update, base = _case()

    def tv(options, defense):
        knowledge = dataclasses.replace(base, defense=None if defense is None else build_defense(defense),
                                        defense_seed=None if defense is None else 0)
        return ATTACKS.create("bayes", options)._tv(update, knowledge)

    assert tv({}, None) == ATTACKS.get("bayes").default_tv == L2_TV / 2
    assert tv({}, ["laplacian:b=0.01"]) == pytest.approx(L1_TV / 0.01)
    assert tv({}, ["gaussian:sigma=0.01"]) == pytest.approx(L2_TV / (2 * 0.01**2))
    assert tv({}, ["prune:rate=0.5", "laplacian:b=0.001"]) == pytest.approx(L1_TV / 0.001)
    assert tv({"tv": 0.3}, ["laplacian:b=0.01"]) == 0.3
