"""Post-processing defenses: records, determinism, identities, invariants, specs and the
attacker's conditionals."""

import dataclasses
import math

import pytest
import torch
from conftest import tiny_lenet

from gradleak.client import simulate_client
from gradleak.defenses import (
    DEFENSES,
    Chain,
    NotModeled,
    TrainingDefense,
    build_defense,
    parse_defense,
)
from gradleak.defenses.clip import NormClip, ValueClip
from gradleak.defenses.conditionals import (
    Gaussian,
    Identity,
    Laplace,
    Masked,
    QuantizedGaussian,
    SignAgreement,
    Transformed,
)
from gradleak.defenses.noise import GaussianNoise, LaplacianNoise
from gradleak.defenses.quantize import QSGD, SignSGD, levels_for_bits
from gradleak.defenses.sparsify import RandomPrune, TopK, keep_count
from gradleak.errors import GradleakError

# one instance of every post-processing defense, with settings that change the update
SPECS = ["gaussian:sigma=0.01", "gaussian:multiplier=0.5,clip=0.2", "laplacian:b=0.01", "topk:keep=0.1,scope=tensor",
         "topk:keep=0.05,scope=global", "prune:rate=0.5", "qsgd:bits=4", "qsgd:levels=3", "signsgd:scale=mean",
         "signsgd:scale=none", "valueclip:bound=0.001", "normclip:max_norm=0.01"]
RANDOM = {"gaussian", "laplacian", "prune", "qsgd"}
POST_PROCESSING = {"gaussian", "laplacian", "normclip", "prune", "qsgd", "signsgd", "topk", "valueclip"}
CLIENT_SIDE = {"soteria"}  # post-processing that reads the client's batch
TRAINING = {"ats", "dpsgd"}  # change how the client trains; only first in a chain


@pytest.fixture(scope="module")
def update():
    model = tiny_lenet(channels=1, size=8, classes=4)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 8, 8, generator=gen)
    return simulate_client(model, images, torch.tensor([0, 3]))


def synthetic(update, *tensors):
    """`update` carrying `tensors` instead (names made up)."""
    return dataclasses.replace(update, names=tuple(f"t{i}" for i in range(len(tensors))), tensors=tuple(tensors))


def flat(update):
    return torch.cat([t.reshape(-1) for t in update.tensors])


def same(a, b):
    return len(a.tensors) == len(b.tensors) and all(torch.equal(x, y) for x, y in zip(a.tensors, b.tensors))


def test_every_post_processing_defense_is_registered_and_covered():
    # equality, not a subset: a newly registered defense must be placed in a group
    assert POST_PROCESSING | CLIENT_SIDE | TRAINING == set(DEFENSES.names())
    assert all(isinstance(parse_defense(name), TrainingDefense) for name in TRAINING)
    assert not any(isinstance(parse_defense(s), TrainingDefense) for s in SPECS)
    assert {s.partition(":")[0] for s in SPECS} == POST_PROCESSING
    for name in POST_PROCESSING:
        assert DEFENSES.entry(name).summary


@pytest.mark.parametrize("spec", SPECS)
def test_transform_returns_a_new_record_and_leaves_the_input(update, spec):
    defense = parse_defense(spec)
    before = tuple(t.clone() for t in update.tensors)
    out = defense.transform(update, seed=3)
    assert out is not update and out.defenses == (*update.defenses, defense.spec())
    assert defense.spec() == spec
    assert out.names == update.names and [t.shape for t in out.tensors] == [t.shape for t in before]
    assert all(t.dtype == b.dtype for t, b in zip(out.tensors, before))
    assert all(torch.equal(t, b) for t, b in zip(update.tensors, before))
    assert not same(out, update)


@pytest.mark.parametrize("spec", SPECS)
def test_same_seed_same_update_and_randomness_only_where_random(update, spec):
    defense = parse_defense(spec)
    assert same(defense.transform(update, seed=5), defense.transform(update, seed=5))
    differs = not same(defense.transform(update, seed=5), defense.transform(update, seed=6))
    assert differs == (defense.name in RANDOM)


@pytest.mark.parametrize("spec", ["gaussian:sigma=0", "laplacian:b=0", "topk:keep=1", "topk:keep=1,scope=global",
                                  "prune:rate=0", "normclip:max_norm=1e6", "valueclip:bound=1e6"])
def test_identity_settings_are_bit_for_bit(update, spec):
    defense = parse_defense(spec)
    out = defense.transform(update, seed=1)
    assert same(out, update) and out.defenses == (defense.spec(),)


def test_empty_chain_is_the_identity(update):
    out = Chain([]).transform(update, seed=1)
    assert same(out, update) and out.defenses == update.defenses
    assert Chain([]).spec() == "none"
    assert build_defense([]).conditional(Identity()) == Identity()


def test_transform_rejects_bad_seeds(update):
    for seed in (-1, 1.5, True, "1"):
        with pytest.raises(GradleakError, match="seed"):
            TopK().transform(update, seed=seed)


# ---- invariants ---------------------------------------------------------------------


def test_normclip_bounds_the_norm_and_keeps_the_direction(update):
    for c in (1e-4, 0.01, 0.5 * update.norm()):
        out = NormClip(c).transform(update)
        assert out.norm() <= c * (1 + 1e-6) and out.norm() >= c * (1 - 1e-6)
        scale = c / update.norm()
        assert all(torch.allclose(o, t * scale, rtol=1e-5, atol=0) for o, t in zip(out.tensors, update.tensors))


def test_normclip_of_a_zero_update_is_zero(update):
    zero = synthetic(update, torch.zeros(5), torch.zeros(2, 3))
    assert same(NormClip(1.0).transform(zero), zero)


def test_valueclip_bounds_every_entry_and_keeps_the_small_ones(update):
    bound = float(flat(update).abs().median())
    out = ValueClip(bound).transform(update)
    assert flat(out).abs().max() <= bound
    small = flat(update).abs() <= bound
    assert torch.equal(flat(out)[small], flat(update)[small])
    assert torch.equal(flat(out)[~small], flat(update)[~small].sign() * bound)


@pytest.mark.parametrize("keep", [0.01, 0.1, 0.37])
def test_topk_per_tensor_keeps_exactly_k_largest(update, keep):
    out = TopK(keep).transform(update)
    for o, t in zip(out.tensors, update.tensors):
        k = max(1, math.floor(keep * t.numel() + 0.5))
        assert k == keep_count(keep, t.numel())
        nz = o != 0
        assert int(nz.sum()) == k
        assert torch.equal(o[nz], t[nz])  # kept values are untouched
        # every kept entry is at least as large as every dropped one
        assert t[nz].abs().min() >= t[~nz].abs().max() if k < t.numel() else True


def test_topk_global_keeps_exactly_k_largest_over_all_tensors(update):
    keep = 0.05
    out = TopK(keep, scope="global").transform(update)
    before, after = flat(update), flat(out)
    k = max(1, math.floor(keep * before.numel() + 0.5))
    nz = after != 0
    assert int(nz.sum()) == k
    assert torch.equal(after[nz], before[nz])
    assert before[nz].abs().min() >= before[~nz].abs().max()
    # global differs from per tensor: some tensor keeps a different count
    per = TopK(keep).transform(update)
    assert [int((t != 0).sum()) for t in per.tensors] != [int((t != 0).sum()) for t in out.tensors]


def test_topk_keeps_at_least_one_and_rounds_halves_up():
    assert keep_count(1e-9, 10) == 1 and keep_count(0.25, 10) == 3 and keep_count(0.35, 10) == 4
    assert keep_count(1.0, 7) == 7


def test_prune_keeps_the_right_fraction_and_masks_reproduce_the_transform(update):
    rate, n = 0.3, 200_000
    big = synthetic(update, torch.randn(n, generator=torch.Generator().manual_seed(1)) + 10.0, torch.ones(3, 5))
    prune = RandomPrune(rate)
    out = prune.transform(big, seed=11)
    kept = float((out.tensors[0] != 0).float().mean())
    assert abs(kept - (1 - rate)) < 3 * math.sqrt(rate * (1 - rate) / n)
    masks = prune.masks([t.shape for t in big.tensors], seed=11)
    assert all(m.dtype == torch.bool for m in masks)
    assert all(torch.equal(m, o != 0) for m, o in zip(masks, out.tensors))
    assert all(torch.equal(o[m], t[m]) for m, o, t in zip(masks, out.tensors, big.tensors))
    assert not torch.equal(prune.masks([(n,)], seed=12)[0], masks[0])


def test_gaussian_noise_has_the_stated_sigma(update):
    n = 200_000
    zero = synthetic(update, torch.zeros(n))
    for defense, sigma in ((GaussianNoise(sigma=0.05), 0.05), (GaussianNoise(multiplier=0.5, clip=0.2), 0.1)):
        assert defense.sigma == pytest.approx(sigma)
        noise = defense.transform(zero, seed=2).tensors[0]
        assert abs(float(noise.std()) / sigma - 1) < 0.03
        assert abs(float(noise.mean())) < 5 * sigma / math.sqrt(n)


def test_laplacian_noise_has_the_stated_scale(update):
    n, b = 200_000, 0.02
    noise = LaplacianNoise(b).transform(synthetic(update, torch.zeros(n)), seed=2).tensors[0]
    assert abs(float(noise.abs().mean()) / b - 1) < 0.03  # E|X| = b for Laplace(0, b)
    assert abs(float(noise.mean())) < 5 * b * math.sqrt(2 / n)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_qsgd_is_unbiased_and_on_its_grid(update, bits):
    v = torch.randn(16, generator=torch.Generator().manual_seed(4))
    v[3] = 0.0
    s = levels_for_bits(bits)
    norm = float(v.double().norm())
    q = QSGD(bits=bits)
    draws = torch.stack([q.transform(synthetic(update, v), seed=seed).tensors[0] for seed in range(2000)]).double()
    # on the grid ||v|| * {0..s} / s with v's signs, zero where v is zero
    idx = draws.abs() * s / norm
    assert torch.allclose(idx, idx.round(), atol=1e-4) and idx.round().max() <= s
    assert torch.all((draws == 0) | (draws.sign() == v.sign()))
    # Var Q(v)_i <= (||v|| / s)^2 / 4, so the mean of N draws has sd <= ||v|| / (2 s sqrt(N));
    # 5 sd per entry leaves a false-failure chance below 1e-5 over the 16 entries
    tol = 5 * norm / (2 * s * math.sqrt(len(draws)))
    assert torch.all((draws.mean(0) - v.double()).abs() <= tol)


def test_qsgd_one_bit_is_ternary_and_zero_stays_zero(update):
    assert levels_for_bits(1) == 1 and levels_for_bits(4) == 15 and QSGD(levels=7).levels == 7
    v = torch.randn(50, generator=torch.Generator().manual_seed(0))
    out = QSGD(bits=1).transform(synthetic(update, v, torch.zeros(4)), seed=0)
    assert set(out.tensors[0].double().div(v.double().norm()).round(decimals=5).tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(out.tensors[1], torch.zeros(4))


def test_signsgd_shares_signs_times_the_scale(update):
    v = torch.tensor([0.5, -2.0, 0.0, 1.5])
    mean_out, none_out = (SignSGD(s).transform(synthetic(update, v)).tensors[0] for s in ("mean", "none"))
    assert torch.equal(none_out, torch.tensor([1.0, -1.0, 0.0, 1.0]))
    assert torch.equal(mean_out, torch.tensor([1.0, -1.0, 0.0, 1.0]) * 1.0)  # mean |v| = 1
    out = SignSGD().transform(update)
    for o, t in zip(out.tensors, update.tensors):
        scale = t.abs().mean()
        assert torch.equal(o.abs()[t != 0], scale.expand(int((t != 0).sum()))) and torch.all(o.sign() == t.sign())


# ---- specs ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS + ["gaussian:sigma=1e-05", "normclip:max_norm=1e6", "qsgd:levels=100"])
def test_spec_round_trip(spec):
    defense = parse_defense(spec)
    assert parse_defense(defense.spec()).spec() == defense.spec()
    assert parse_defense(defense.spec()).params() == defense.params()


def test_spec_shows_what_was_given():
    assert QSGD(bits=4).spec() == "qsgd:bits=4" and QSGD(levels=15).spec() == "qsgd:levels=15"
    assert TopK().spec() == "topk:keep=0.1,scope=tensor"
    assert RandomPrune().spec() == "prune:rate=0.5"


@pytest.mark.parametrize("spec, words", [
    ("nosuch:x=1", ["nosuch", "gaussian", "topk", "valueclip"]),
    ("topk:kep=0.1", ["kep", "keep", "scope"]),
    ("topk:keep", ["keep", "key=value"]),
    ("topk:keep=0", ["keep", "0"]),
    ("topk:keep=1.5", ["keep", "(0, 1]", "1.5"]),
    ("topk:scope=layer", ["scope", "layer"]),
    ("prune:rate=1", ["rate", "[0, 1)", "1"]),
    ("prune:rate=-0.1", ["rate", "-0.1"]),
    ("qsgd:bits=0", ["bits", "0"]),
    ("qsgd:bits=2.5", ["bits", "2.5"]),
    ("qsgd:levels=0", ["levels", "0"]),
    ("qsgd", ["bits", "levels"]),
    ("qsgd:bits=2,levels=3", ["bits", "levels"]),
    ("signsgd:scale=max", ["scale", "mean", "max"]),
    ("valueclip:bound=0", ["bound", "0"]),
    ("valueclip", ["bound", "None"]),
    ("normclip", ["max_norm", "None"]),
    ("normclip:max_norm=-1", ["max_norm", "-1"]),
    ("gaussian:sigma=-1", ["sigma", "-1"]),
    ("laplacian:b=nan", ["b", "nan"]),
])
def test_parse_errors_name_the_argument(spec, words):
    with pytest.raises(GradleakError) as info:
        parse_defense(spec)
    for word in words:
        assert word in str(info.value), (spec, word, str(info.value))


# ---- chains --------------------------------------------------------------------------


def test_chain_applies_in_order_and_joins_specs(update):
    chain = build_defense(["valueclip:bound=0.001", "signsgd:scale=none"])
    assert chain.spec() == "valueclip:bound=0.001 signsgd:scale=none"
    out = chain.transform(update, seed=0)
    assert out.defenses == ("valueclip:bound=0.001", "signsgd:scale=none")
    manual = SignSGD("none").transform(ValueClip(0.001).transform(update))
    assert same(out, manual)
    # the other order is a different update: signs first, then clip to 0.001
    reverse = build_defense(["signsgd:scale=none", "valueclip:bound=0.001"]).transform(update, seed=0)
    assert flat(reverse).abs().max() == pytest.approx(0.001) and not same(out, reverse)


def test_chain_with_a_random_link_is_seeded(update):
    chain = build_defense(["prune:rate=0.5", "laplacian:b=0.1"])
    assert same(chain.transform(update, seed=9), chain.transform(update, seed=9))
    assert not same(chain.transform(update, seed=9), chain.transform(update, seed=10))


def test_post_processing_needs_no_client_batch(update):
    for spec in SPECS:
        assert not parse_defense(spec).needs_client


# ---- conditionals --------------------------------------------------------------------


def stacked(update, r=3, seed=0):
    """R predictions: the clean update and noisy versions, stacked (R, *shape)."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.stack([t] + [t + 0.01 * torch.randn(t.shape, generator=gen) for _ in range(r - 1)])
                 for t in update.tensors)


CONDITIONAL_SPECS = [(["gaussian:sigma=0.01"], Gaussian), (["laplacian:b=0.01"], Laplace),
                     (["topk:keep=0.1"], Transformed), (["topk:keep=0.1,scope=global"], Transformed),
                     (["prune:rate=0.5"], Masked), (["qsgd:bits=4"], QuantizedGaussian),
                     (["signsgd"], SignAgreement), (["valueclip:bound=0.001"], Transformed),
                     (["normclip:max_norm=0.01"], Transformed), (["prune:rate=0.5", "laplacian:b=0.01"], Masked),
                     (["normclip:max_norm=0.01", "gaussian:sigma=0.01"], Transformed)]


@pytest.mark.parametrize("specs, kind", CONDITIONAL_SPECS)
def test_conditional_nll_has_one_value_per_restart(update, specs, kind):
    chain = build_defense(specs)
    observed = chain.transform(update, seed=4).tensors
    for seed in (None, 4):
        cond = chain.conditional(Identity(), seed=seed)
        assert isinstance(cond, kind)
        predicted = tuple(p.requires_grad_(True) for p in stacked(update))
        nll = cond.nll(predicted, observed)
        assert nll.shape == (3,) and torch.all(torch.isfinite(nll))
        # the Bayes attack descends this: gradients reach the prediction and are finite
        grads = torch.autograd.grad(nll.sum(), predicted, allow_unused=True)
        assert all(g is None or torch.all(torch.isfinite(g)) for g in grads)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_prune_laplace_conditional_uses_the_transforms_masks(update):
    chain = build_defense(["prune:rate=0.5", "laplacian:b=0.1"])
    observed = chain.transform(update, seed=7).tensors
    unknown = chain.conditional(Identity())
    assert isinstance(unknown, Masked) and isinstance(unknown.inner, Laplace) and unknown.inner.b == 0.1
    assert unknown.keep == 0.5 and unknown.masks_for([o.shape for o in observed]) is None
    known = chain.conditional(Identity(), seed=7)
    assert isinstance(known, Masked) and isinstance(known.inner, Laplace)
    # the prune link ran with the chain's first spawned seed; the known masks are its zero pattern
    link_seed = chain._seeds(7)[0]
    pruned = chain.defenses[0].transform(update, seed=link_seed)
    masks = known.masks_for([o.shape for o in observed])
    expected = chain.defenses[0].masks([t.shape for t in update.tensors], link_seed)
    assert all(torch.equal(m, e) for m, e in zip(masks, expected))
    assert all(torch.equal(m, p != 0) for m, p in zip(masks, pruned.tensors))
    # the clean prediction is likelier than a perturbed one, masks known or not
    clean = tuple(t.unsqueeze(0) for t in update.tensors)
    gen = torch.Generator().manual_seed(0)
    perturbed = tuple((t + 0.5 * torch.randn(t.shape, generator=gen)).unsqueeze(0) for t in update.tensors)
    for cond in (known, unknown):
        assert float(cond.nll(clean, observed)[0]) < float(cond.nll(perturbed, observed)[0])


def test_topk_conditional_is_the_transform_per_restart(update):
    for scope in ("tensor", "global"):
        defense = TopK(0.1, scope)
        cond = defense.conditional(Identity())
        preds = stacked(update)
        shared = cond.fn(preds)
        for r in range(3):
            one = synthetic(update, *(p[r] for p in preds))
            assert all(torch.equal(s[r], t) for s, t in zip(shared, defense.transform(one).tensors))


def test_normclip_conditional_clips_each_restart(update):
    c = 0.5 * update.norm()
    cond = NormClip(c).conditional(Identity())
    preds = tuple(torch.stack([t, 0.1 * t, 3 * t]) for t in update.tensors)
    shared = cond.fn(preds)
    norms = torch.sqrt(sum(s.double().reshape(3, -1).pow(2).sum(1) for s in shared))
    assert norms[0] == pytest.approx(c, rel=1e-6) and norms[2] == pytest.approx(c, rel=1e-6)
    assert all(torch.equal(s[1], p[1]) for s, p in zip(shared, preds))  # within the bound: untouched
    zero = tuple(torch.zeros(2, *t.shape, requires_grad=True) for t in update.tensors[:2])
    grads = torch.autograd.grad(sum(s.sum() for s in cond.fn(zero)), zero)
    assert all(torch.all(torch.isfinite(g)) for g in grads)


def test_valueclip_conditional_clamps():
    cond = ValueClip(0.5).conditional(Gaussian(0.1))
    assert isinstance(cond, Transformed) and cond.inner == Gaussian(0.1)
    out = cond.fn((torch.tensor([[-1.0, 0.2], [0.7, -0.3]]),))[0]
    assert torch.equal(out, torch.tensor([[-0.5, 0.2], [0.5, -0.3]]))


def test_conditionals_refuse_what_they_do_not_model():
    with pytest.raises(NotModeled, match="qsgd"):
        QSGD(bits=2).conditional(Gaussian(0.1))
    with pytest.raises(NotModeled, match="signsgd"):
        SignSGD().conditional(Laplace(0.1))
    with pytest.raises(NotModeled, match="prun"):
        RandomPrune(0.5).conditional(QuantizedGaussian(3))
    with pytest.raises(NotModeled):
        build_defense(["prune:rate=0.5", "qsgd:bits=2"]).conditional(Identity())
    with pytest.raises(NotModeled):
        build_defense(["qsgd:bits=2", "laplacian:b=0.1"]).conditional(Identity())
    # identity settings model as what follows them
    assert RandomPrune(0).conditional(Laplace(0.2)) == Laplace(0.2)
    assert TopK(1.0).conditional(Identity()) == Identity()
    assert isinstance(RandomPrune(0.5).conditional(Gaussian(0.1)), Masked)
