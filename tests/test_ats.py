import copy

import numpy as np
import pytest
import torch
from conftest import tiny_lenet
from PIL import Image, ImageEnhance, ImageOps

from gradleak.client import simulate_client
from gradleak.data.base import Normalization
from gradleak.defenses.ats import (
    ATS,
    OPS,
    PAPER_POLICIES,
    TRANSFORMATIONS,
    Policy,
    Transformation,
    accuracy_score,
    magnitude_for,
    ops,
    parse_policy,
    privacy_score,
    sample_policies,
    search_policies,
)
from gradleak.defenses.base import ClientBatch
from gradleak.errors import GradleakError
from gradleak.records import ClientUpdate, LocalTraining, Protocol

NO_MAGNITUDE = {"AutoContrast", "Equalize", "Invert"}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _bytes(n=4, c=3, h=9, w=11, seed=0) -> torch.Tensor:
    """8-bit images with a full-range, a narrow-range and a few-level one (PIL's domain)."""
    v = torch.randint(0, 256, (n, c, h, w), generator=_gen(seed))
    v[1] = v[1] // 4 + 60
    v[2] = v[2] % 7 * 20
    return v


def _pil(v: torch.Tensor) -> Image.Image:
    return Image.fromarray(v.permute(1, 2, 0).numpy().astype(np.uint8))


def _unpil(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


# --- ops ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_op_keeps_shape_dtype_range_input_and_is_deterministic(name, dtype):
    x = torch.rand(3, 3, 8, 10, generator=_gen(), dtype=dtype)
    before = x.clone()
    out = OPS[name](x, magnitude_for(name, 9), _gen(1))
    assert out.shape == x.shape and out.dtype == dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(x, before) and out.data_ptr() != x.data_ptr()
    assert torch.equal(out, OPS[name](x, magnitude_for(name, 9), _gen(1)))


@pytest.mark.parametrize("name", sorted(set(OPS) - NO_MAGNITUDE))
def test_level_zero_is_the_identity_and_level_nine_is_not(name):
    x = _bytes().float() / 255
    assert torch.equal(OPS[name](x, magnitude_for(name, 0), _gen()), x)
    if name != "Identity":
        assert not torch.equal(OPS[name](x, magnitude_for(name, 9), _gen()), x)


def test_level_ranges():
    assert [magnitude_for("Posterize", k) for k in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert magnitude_for("Solarize", 0) > 1 and magnitude_for("Solarize", 9) == 0
    assert magnitude_for("TranslateX", 9) == pytest.approx(150 / 331)
    assert magnitude_for("Rotate", 9) == pytest.approx(30) and magnitude_for("ShearY", 9) == pytest.approx(0.3)
    assert magnitude_for("Contrast", 9) == pytest.approx(0.5)
    for bad in (("Rotate", 10), ("Rotate", -1), ("Spin", 1)):
        with pytest.raises(GradleakError):
            magnitude_for(*bad)


def test_rotate_quarter_turns_by_hand():
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3) / 10
    expected = torch.tensor([[3.0, 6, 9], [2, 5, 8], [1, 4, 7]]).view(1, 1, 3, 3) / 10  # counterclockwise
    torch.testing.assert_close(ops.rotate(x, 90.0, _gen()), expected)
    y = torch.rand(2, 3, 4, 4, generator=_gen())
    torch.testing.assert_close(ops.rotate(y, -90.0, _gen()), torch.rot90(y, -1, (-2, -1)))
    torch.testing.assert_close(ops.rotate(y, 180.0, _gen()), y.flip(-1, -2))


def test_invert_solarize_posterize_by_hand():
    x = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0]).view(1, 1, 1, 5)
    torch.testing.assert_close(ops.invert(x, 0, _gen()).flatten(), torch.tensor([1.0, 0.8, 0.5, 0.2, 0.0]))
    torch.testing.assert_close(ops.solarize(x, 0.5, _gen()).flatten(), torch.tensor([0.0, 0.2, 0.5, 0.2, 0.0]))
    # 8-bit values 0, 51, 128, 204, 255
    torch.testing.assert_close(ops.posterize(x, 1, _gen()).flatten() * 255, torch.tensor([0.0, 0, 128, 128, 128]))
    torch.testing.assert_close(ops.posterize(x, 2, _gen()).flatten() * 255, torch.tensor([0.0, 0, 128, 192, 192]))
    with pytest.raises(GradleakError, match="bits"):
        ops.posterize(x, 2.5, _gen())


def test_translate_shifts_each_image_one_way_or_the_other_with_black_fill():
    x = torch.rand(8, 3, 5, 11, generator=_gen()) * 0.9 + 0.1
    out = ops.translate_x(x, 2 / 11, _gen(3))
    left = torch.cat([x[..., 2:], torch.zeros_like(x[..., :2])], -1)
    right = torch.cat([torch.zeros_like(x[..., :2]), x[..., :-2]], -1)
    went_left = [torch.equal(out[i], left[i]) for i in range(8)]
    assert all(went_left[i] or torch.equal(out[i], right[i]) for i in range(8))
    assert 0 < sum(went_left) < 8  # the sign is drawn per image
    assert not torch.equal(out, ops.translate_x(x, 2 / 11, _gen(4)))


def test_shear_by_hand_about_the_top_left_corner():
    # factor 2: the centre of row y reads x + 2 (y + 0.5) = x + 2y + 1, a whole-pixel shift
    x = torch.rand(1, 1, 3, 8, generator=_gen()) * 0.9 + 0.1
    out = ops.shear_x(x, 2.0, _gen(0))
    for sign in (1, -1):
        expected = torch.zeros_like(x)
        for y in range(3):
            for col in range(8):
                src = col + sign * (2 * y + 1)
                if 0 <= src < 8:
                    expected[0, 0, y, col] = x[0, 0, y, src]
        if torch.allclose(out, expected, atol=1e-5):
            break
    else:
        pytest.fail("ShearX is not a whole-pixel shift by 2y+1 of row y in either direction")
    out = ops.shear_y(x.transpose(-1, -2), 2.0, _gen(0))
    torch.testing.assert_close(out, expected.transpose(-1, -2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,reference,tolerance", [
    ("AutoContrast", ImageOps.autocontrast, 1 / 255),  # PIL truncates its lut to whole levels
    ("Equalize", ImageOps.equalize, 0.0),
    ("Invert", ImageOps.invert, 1e-6),
])
def test_unsigned_ops_match_pil(name, reference, tolerance):
    v = _bytes(h=24, w=30)  # over 255 pixels, or PIL's equalize step is 0 (the identity)
    out = OPS[name](v.float() / 255, 0.0, _gen())
    assert not torch.equal(out, v.float() / 255)
    for i in range(v.shape[0]):
        assert float((out[i] - _unpil(reference(_pil(v[i])))).abs().max()) <= tolerance + 1e-6, i


@pytest.mark.parametrize("level", range(10))
def test_solarize_and_posterize_levels_match_pil(level):
    v = _bytes()
    x = v.float() / 255
    sol = ops.solarize(x, magnitude_for("Solarize", level), _gen())
    bits = int(magnitude_for("Posterize", level))
    post = ops.posterize(x, bits, _gen())
    for i in range(v.shape[0]):
        torch.testing.assert_close(sol[i], _unpil(ImageOps.solarize(_pil(v[i]), 256 * (1 - level / 9))))
        torch.testing.assert_close(post[i], _unpil(ImageOps.posterize(_pil(v[i]), bits)))


@pytest.mark.parametrize("name,enhancer", [("Brightness", ImageEnhance.Brightness), ("Color", ImageEnhance.Color),
                                           ("Contrast", ImageEnhance.Contrast), ("Sharpness", ImageEnhance.Sharpness)])
@pytest.mark.parametrize("level", [3, 9])
def test_enhance_ops_match_pil_at_one_of_the_two_signs(name, enhancer, level):
    v = _bytes()
    m = magnitude_for(name, level)
    out = OPS[name](v.float() / 255, m, _gen())
    for i in range(v.shape[0]):
        # PIL rounds to 8 bits; both factors 1 + m and 1 - m are AutoAugment's
        err = min(float((out[i] - _unpil(enhancer(_pil(v[i])).enhance(f))).abs().max()) for f in (1 + m, 1 - m))
        assert err <= 2 / 255, (i, err)


def test_rotate_matches_pil_with_grey_fill_at_ats_level():
    v = _bytes()
    degrees = magnitude_for("Rotate", 2)
    out = ops.rotate(v.float() / 255, degrees, _gen())
    for i in range(v.shape[0]):
        rgba = _pil(v[i]).convert("RGBA").rotate(degrees)
        ref = Image.composite(rgba, Image.new("RGBA", rgba.size, (128,) * 4), rgba).convert("RGB")
        torch.testing.assert_close(out[i], _unpil(ref))


def test_cutout_fills_one_square_per_image():
    x = torch.zeros(4, 1, 10, 10)
    out = ops.cutout(x, 0.4, _gen())
    filled = (out == ops.GREY).sum(dim=(1, 2, 3))
    assert all(0 < int(k) <= 16 for k in filled)
    with pytest.raises(GradleakError, match="magnitude"):
        ops.cutout(x, 1.5, _gen())


def test_ops_reject_bad_input():
    with pytest.raises(GradleakError, match="images"):
        ops.invert(torch.rand(3, 8, 8), 0, _gen())
    with pytest.raises(GradleakError, match="magnitude"):
        ops.rotate(torch.rand(1, 3, 8, 8), float("nan"), _gen())


# --- policies ----------------------------------------------------------------------------------

def test_search_space_has_fifty_transformations():
    assert len(TRANSFORMATIONS) == 50
    assert all(t.op in OPS and 0 <= t.level <= 9 and 0 <= t.probability <= 1 for t in TRANSFORMATIONS)
    assert [(t.op, t.level) for t in parse_policy("43-18-18").transformations] == [
        ("TranslateY", 3), ("Contrast", 7), ("Contrast", 7)]
    assert [(t.op, t.level) for t in parse_policy("3-1-7").transformations] == [
        ("TranslateX", 9), ("Contrast", 6), ("TranslateY", 2)]


def test_parse_policy_round_trips_the_paper_policies():
    assert parse_policy("3-1-7") == Policy((3, 1, 7))
    for text in PAPER_POLICIES:
        assert str(parse_policy(text)) == text
    assert str(parse_policy(" 5 ")) == "5"


@pytest.mark.parametrize("bad", ["", "1-2-3-4", "99", "a-b", "-1", "3--1", "50", None])
def test_parse_policy_rejects(bad):
    with pytest.raises(GradleakError, match="policy"):
        parse_policy(bad)


def test_transformation_validates_its_fields():
    for bad in (("Spin", 0.5, 1), ("Rotate", 0.5, 10), ("Rotate", 1.5, 1)):
        with pytest.raises(GradleakError):
            Transformation(*bad)


def test_policy_validates_its_indices():
    for bad in ((), (50,), (1, 2, 3, 4), (True,)):
        with pytest.raises(GradleakError, match="policy"):
            Policy(bad)


def test_policy_apply_is_deterministic_and_leaves_input():
    x = torch.rand(3, 3, 12, 12, generator=_gen())
    before = x.clone()
    policy = parse_policy("3-1-7")
    out = policy.apply(x, _gen(7))
    assert out.shape == x.shape and torch.equal(x, before)
    assert torch.equal(out, policy.apply(x, _gen(7)))
    assert not torch.equal(out, x) and not torch.equal(out, policy.apply(x, _gen(8)))


def test_sample_policies():
    drawn = sample_policies(30, seed=1)
    assert drawn == sample_policies(30, seed=1) and drawn != sample_policies(30, seed=2)
    assert all(1 <= len(p.indices) <= 3 for p in drawn)


# --- the defense -------------------------------------------------------------------------------

def _client(n=3, seed=0, training=LocalTraining()):
    gen = _gen(seed)
    x, y = torch.rand(n, 3, 16, 16, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    model = tiny_lenet()
    return model, x, y, ClientBatch(model, x, y, training)


def test_spec_and_constructor():
    assert ATS().spec() == "ats:policy=3-1-7"
    assert ATS("43-18-18").spec() == "ats:policy=43-18-18" and ATS(policy=3).spec() == "ats:policy=3"
    for bad in ("99", "", "1-2-3-4"):
        with pytest.raises(GradleakError, match="policy"):
            ATS(bad)
    with pytest.raises(GradleakError, match="normalization"):
        ATS(normalization=(0.5, 0.5))


def test_transform_recomputes_the_update_on_the_augmented_batch():
    model, x, y, client = _client()
    clean = simulate_client(model, x, y)
    clean_tensors = [t.clone() for t in clean.tensors]
    state = copy.deepcopy(model.state_dict())
    x_before = x.clone()
    ats = ATS("3-1-7")
    shared = ats.transform(clean, seed=5, client=client)
    assert isinstance(shared, ClientUpdate) and shared is not clean
    assert shared.defenses == ("ats:policy=3-1-7",) and clean.defenses == ()
    assert all(torch.equal(a, b) for a, b in zip(clean.tensors, clean_tensors))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items()) and torch.equal(x, x_before)
    assert any(not torch.allclose(a, b) for a, b in zip(shared.tensors, clean.tensors))
    augmented = ats.augmented(x, 5)
    assert augmented.shape == x.shape and not torch.equal(augmented, x)
    expected = simulate_client(model, augmented, y)
    assert all(torch.equal(a, b) for a, b in zip(shared.tensors, expected.tensors))
    again = ats.transform(clean, seed=5, client=client)
    assert all(torch.equal(a, b) for a, b in zip(shared.tensors, again.tensors))
    assert not torch.equal(ats.augmented(x, 6), augmented)


def test_transform_fedavg_and_needs_the_client():
    training = LocalTraining(Protocol.FEDAVG, lr=0.1, epochs=2, batch_size=2, shuffle=True)
    model, x, y, client = _client(4, training=training)
    clean = simulate_client(model, x, y, training)
    shared = ATS("43-18-18").transform(clean, seed=1, client=client)
    assert shared.local_steps == clean.local_steps
    assert all(torch.equal(a, b) for a, b in
               zip(shared.tensors, ATS("43-18-18").transform(clean, seed=1, client=client).tensors))
    with pytest.raises(GradleakError, match="client"):
        ATS().transform(clean, seed=1)


def test_a_post_processing_link_after_ats_acts_on_the_ats_update_and_before_it_is_refused():
    from gradleak.defenses import Chain, build_defense
    from gradleak.defenses.quantize import sign_sgd

    model, x, y, client = _client()
    clean = simulate_client(model, x, y)
    chain = build_defense(["ats:policy=3-1-7", "signsgd"])
    shared = chain.transform(clean, seed=5, client=client)
    assert shared.defenses == ("ats:policy=3-1-7", "signsgd:scale=mean")
    ats_seed = chain._seeds(5)[0]  # the seed the chain hands its first link
    ats_update = ATS("3-1-7").transform(clean, seed=ats_seed, client=client)
    # the shared tensors are the signs of the ATS gradient, not the clean one's
    assert all(torch.equal(a, b) for a, b in zip(shared.tensors, sign_sgd(ats_update.tensors)))
    assert any(not torch.equal(a, b) for a, b in zip(shared.tensors, sign_sgd(clean.tensors)))
    with pytest.raises(GradleakError, match="must come first.*after signsgd:scale=mean it would throw"):
        build_defense(["signsgd", "ats:policy=3-1-7"])
    with pytest.raises(GradleakError, match="must come first"):
        Chain([build_defense(["qsgd:bits=2"]).defenses[0], ATS()])
    # a training defense handed an already defended update refuses too
    with pytest.raises(GradleakError, match="already went through signsgd"):
        ATS().transform(build_defense(["signsgd"]).transform(clean, seed=1), client=client)


def test_augmented_maps_model_space_to_pixels_and_back():
    norm = Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    pixels = _bytes(3, h=8, w=8).float() / 255
    x = norm.normalize(pixels)
    # 28 is Solarize at level 0 (the identity), 29 is Invert
    torch.testing.assert_close(ATS("28", normalization=norm).augmented(x, 0), x)
    torch.testing.assert_close(ATS("28").augmented(x, 0), x)
    torch.testing.assert_close(ATS("29", normalization=norm).augmented(x, 0), norm.normalize(1 - pixels))
    lo, hi = x.amin(dim=(0, 2, 3), keepdim=True), x.amax(dim=(0, 2, 3), keepdim=True)
    torch.testing.assert_close(ATS("29").augmented(x, 0), lo + hi - x)  # per-channel batch range


# --- scores ------------------------------------------------------------------------------------

def test_privacy_score_is_the_area_under_the_gradient_similarity_curve():
    model = tiny_lenet()
    x, y = torch.rand(1, 3, 16, 16, generator=_gen(1)), torch.tensor([4])
    noise = torch.rand(x.shape, generator=_gen(9))  # the score's first draw

    def grad(z):
        g = torch.autograd.grad(torch.nn.functional.cross_entropy(model(z), y), list(model.parameters()))
        return torch.cat([t.flatten() for t in g]).double()

    cos = torch.nn.functional.cosine_similarity(grad(noise), grad(x), dim=0)
    # steps=1: the trapezoid of (GradSim at noise, GradSim at x = 1)
    assert privacy_score(model, x, y, None, steps=1, seed=9) == pytest.approx(float(cos + 1) / 2, abs=1e-6)


def test_privacy_score_is_finite_deterministic_and_leaves_the_model():
    model, x, y, _ = _client(2)
    model.train()
    state = copy.deepcopy(model.state_dict())
    s = privacy_score(model, x, y, "3-1-7", steps=4, seed=3)
    assert isinstance(s, float) and -1 <= s <= 1
    assert s == privacy_score(model, x, y, "3-1-7", steps=4, seed=3)
    assert s != privacy_score(model, x, y, "3-1-7", steps=4, seed=4)
    assert s != privacy_score(model, x, y, None, steps=4, seed=3)
    per_layer = privacy_score(model, x, y, "3-1-7", steps=4, seed=3, per_layer=True)
    assert -1 <= per_layer <= 1 and per_layer != s
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    with pytest.raises(GradleakError, match="steps"):
        privacy_score(model, x, y, steps=0)
    with pytest.raises(GradleakError, match="labels"):
        privacy_score(model, x, y[:1])


def test_accuracy_score_is_bounded_by_minus_n():
    model, x, _, _ = _client(4)
    s = accuracy_score(model, x, "3-1-7", seed=2)
    assert isinstance(s, float) and s <= -4 + 1e-6
    assert s == accuracy_score(model, x, "3-1-7", seed=2)
    # identical images have perfectly correlated Jacobians: far below the bound
    assert accuracy_score(model, x[:1].expand(4, -1, -1, -1).contiguous()) < s
    with pytest.raises(GradleakError, match="at least 2"):
        accuracy_score(model, x[:1])


def test_search_ranks_by_privacy_under_the_accuracy_threshold():
    model, x, y, _ = _client(2)
    candidates = ["3-1-7", "43-18-18", "29", "12"]
    ranked = search_policies(model, x, y, candidates, keep=3, steps=2, seed=1)
    assert len(ranked) == 3 and [r.privacy for r in ranked] == sorted(r.privacy for r in ranked)
    assert {str(r.policy) for r in ranked} <= set(candidates)
    policy, s_pri, s_acc = ranked[0]
    assert s_pri == privacy_score(model, x, y, policy, steps=2, seed=1)
    assert s_acc == accuracy_score(model, x, policy, seed=1)
    assert search_policies(model, x, y, candidates, min_accuracy=0.0, steps=2) == []  # S_acc <= -N < 0
    with pytest.raises(GradleakError, match="candidates"):
        search_policies(model, x, y, [])
