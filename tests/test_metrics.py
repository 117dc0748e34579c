"""Image metrics against numpy / scikit-image, matching, labels and evaluate_images.

Tolerances: MSE 1e-12 (numpy, float64), PSNR 1e-9 dB and SSIM 1e-6 per image
(scikit-image; the brief asks 1e-4 for SSIM, ours agrees to float64 rounding).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from gradleak.errors import GradleakError, UnknownNameError
from gradleak.metrics import (
    METRICS,
    PSNR_CAP_DB,
    evaluate_images,
    label_accuracy,
    match,
    mse,
    pairwise_mse,
    psnr,
    ssim,
)
from gradleak.metrics.functional import effective_win_size, pairwise_ssim

SSIM_TOL = 1e-6
PSNR_TOL = 1e-9


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_pair(shape, seed=0, noise=0.2):
    g = _gen(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    y = (x + noise * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


def structured_pair(shape, seed=0):
    """Smooth gradients, a checkerboard and a bright square: edges and flat regions."""
    n, c, h, w = shape
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h, dtype=torch.float64),
                            torch.linspace(0, 1, w, dtype=torch.float64), indexing="ij")
    base = []
    for i in range(n):
        chans = []
        for ch in range(c):
            img = (xx * (ch + 1) + yy * (i + 1)) / (c + n + 1)
            img = img + 0.3 * (((torch.arange(h)[:, None] // 2 + torch.arange(w)[None] // 2) % 2) == (i % 2))
            img[h // 4 : h // 2, w // 4 : w // 2] = 0.9
            chans.append(img.clamp(0, 1))
        base.append(torch.stack(chans))
    x = torch.stack(base)
    g = _gen(seed)
    y = (0.8 * x + 0.1 + 0.05 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


def skimage_ssim(x, y, win_size):
    return np.array([
        structural_similarity(x[i].numpy(), y[i].numpy(), channel_axis=0, data_range=1.0,
                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                              win_size=win_size)
        for i in range(x.shape[0])
    ])


# ---------------------------------------------------------------- functional


def test_mse_matches_numpy():
    x, y = random_pair((4, 3, 16, 16))
    expected = ((x.numpy() - y.numpy()) ** 2).reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(mse(x, y).numpy(), expected, rtol=0, atol=1e-12)
    assert mse(x, y).shape == (4,)


@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (2, 1, 28, 28), (2, 3, 8, 8)])
def test_psnr_matches_skimage(shape):
    x, y = random_pair(shape, seed=1, noise=0.05)
    expected = [peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=1.0) for i in range(shape[0])]
    np.testing.assert_allclose(psnr(x, y).numpy(), expected, rtol=0, atol=PSNR_TOL)


def test_psnr_float32_input_and_data_range():
    x, y = random_pair((2, 3, 8, 8), seed=2)
    expected = [peak_signal_noise_ratio(x[i].numpy() * 255, y[i].numpy() * 255, data_range=255.0) for i in range(2)]
    np.testing.assert_allclose(psnr(x * 255, y * 255, data_range=255.0).numpy(), expected, atol=1e-9)
    # float32 inputs are promoted, so they agree with the float64 result to float32 rounding
    np.testing.assert_allclose(psnr(x.float(), y.float()).numpy(), psnr(x, y).numpy(), atol=1e-4)


def test_psnr_identical_images_are_capped():
    x, _ = random_pair((2, 1, 8, 8))
    out = psnr(x, x.clone())
    assert torch.all(out == PSNR_CAP_DB)
    assert math.isfinite(PSNR_CAP_DB)


@pytest.mark.parametrize("pair", [random_pair, structured_pair])
@pytest.mark.parametrize("shape,win", [((3, 3, 32, 32), 11), ((3, 1, 32, 32), 11), ((2, 3, 8, 8), 7),
                                       ((2, 1, 8, 8), 7), ((1, 3, 6, 10), 5)])
def test_ssim_matches_skimage(pair, shape, win):
    x, y = pair(shape)
    ours = ssim(x, y).numpy()  # default win_size=11, shrunk to `win` for small images
    np.testing.assert_allclose(ours, skimage_ssim(x, y, win), rtol=0, atol=SSIM_TOL)


def test_ssim_explicit_window_and_identity():
    x, y = structured_pair((2, 3, 32, 32))
    np.testing.assert_allclose(ssim(x, y, win_size=7).numpy(), skimage_ssim(x, y, 7), atol=SSIM_TOL)
    np.testing.assert_allclose(ssim(x, x).numpy(), [1.0, 1.0], atol=1e-12)
    assert torch.all(ssim(x, 1 - x) < 0.5)


def test_effective_win_size_shrinks_to_largest_odd_fit():
    assert effective_win_size(32, 32) == 11
    assert effective_win_size(8, 8) == 7
    assert effective_win_size(10, 6) == 5
    assert effective_win_size(2, 2) == 1
    with pytest.raises(GradleakError, match="win_size"):
        effective_win_size(32, 32, 4)


def test_pairwise_costs_agree_with_per_sample_metrics():
    x, _ = random_pair((3, 3, 8, 8), seed=3)
    y, _ = random_pair((4, 3, 8, 8), seed=4)
    pm = pairwise_mse(x, y)
    ps = pairwise_ssim(x, y)
    assert pm.shape == ps.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert pm[i, j] == pytest.approx(float(mse(x[i : i + 1], y[j : j + 1])), abs=1e-12)
            assert ps[i, j] == pytest.approx(float(ssim(x[i : i + 1], y[j : j + 1])), abs=1e-12)


@pytest.mark.parametrize("fn", [mse, psnr, ssim])
def test_shape_mismatch_names_both_shapes(fn):
    with pytest.raises(GradleakError) as err:
        fn(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 9))
    assert "(2, 3, 8, 8)" in str(err.value) and "(2, 3, 8, 9)" in str(err.value)


def test_bad_inputs_raise_gradleak_error():
    with pytest.raises(GradleakError, match=r"\(N, C, H, W\)"):
        mse(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(GradleakError, match="data_range"):
        psnr(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), data_range=0)
    with pytest.raises(GradleakError, match="sigma"):
        ssim(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), sigma=-1.0)


# ---------------------------------------------------------------- registry


def test_metric_registry():
    assert {"mse", "psnr", "ssim"} <= set(METRICS.names())
    x, y = random_pair((2, 3, 16, 16))
    for name, fn in (("mse", mse), ("psnr", psnr), ("ssim", ssim)):
        torch.testing.assert_close(METRICS.get(name).per_sample(y, x), fn(y, x))
    with pytest.raises(UnknownNameError, match="psnr"):
        METRICS.get("lpipz")


# ---------------------------------------------------------------- matching


def distinct_batch(n=6, shape=(3, 8, 8), seed=5):
    return torch.rand((n, *shape), generator=_gen(seed), dtype=torch.float64)


@pytest.mark.parametrize("cost", ["mse", "ssim"])
def test_match_recovers_known_permutation(cost):
    original = distinct_batch()
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    noise = 0.05 * torch.randn(original.shape, generator=_gen(6), dtype=torch.float64)
    recon = (original + noise).clamp(0, 1)[perm]  # recon[k] is a noisy original[perm[k]]
    out = match(recon, original, cost)
    assert out.dtype == torch.long and out.shape == (6,)
    torch.testing.assert_close(perm[out], torch.arange(6))  # recon[out[i]] came from original[i]


def test_metrics_after_matching_equal_unpermuted_metrics():
    original = distinct_batch()
    recon = (original + 0.05 * torch.randn(original.shape, generator=_gen(7), dtype=torch.float64)).clamp(0, 1)
    perm = torch.tensor([2, 4, 0, 5, 3, 1])
    shuffled = evaluate_images(recon[perm], original)
    direct = evaluate_images(recon, original)
    assert direct.assignment == tuple(range(6))
    assert torch.equal(perm[list(shuffled.assignment)], torch.arange(6))
    for field in ("mse", "psnr", "ssim"):
        np.testing.assert_allclose(getattr(shuffled, field), getattr(direct, field), rtol=0, atol=1e-12)
        expected = {"mse": mse, "psnr": psnr, "ssim": ssim}[field](recon, original).numpy()
        np.testing.assert_allclose(getattr(direct, field), expected, rtol=0, atol=1e-12)


def test_match_more_reconstructions_than_originals():
    original = distinct_batch(3)
    recon = torch.cat([distinct_batch(2, seed=9), original[[2, 0, 1]]])
    assert match(recon, original).tolist() == [3, 4, 2]
    with pytest.raises(GradleakError, match="at least as many"):
        match(original[:2], original)


def test_match_tolerates_nan_costs():
    original = distinct_batch(3)
    recon = original[[1, 2, 0]].clone()
    recon[0] = float("nan")  # the copy of original 1 is lost
    out = match(recon, original)
    assert sorted(out.tolist()) == [0, 1, 2]
    assert out[0] == 2 and out[2] == 1


def test_unknown_matching_cost_lists_known():
    x = distinct_batch(2)
    with pytest.raises(UnknownNameError, match="mse"):
        match(x, x, cost="no-such-metric")
    assert "mse" in METRICS


# ---------------------------------------------------------------- labels


def test_label_accuracy_is_a_multiset_comparison():
    assert label_accuracy([1, 1, 2], [1, 2, 2]) == pytest.approx(2 / 3)
    assert label_accuracy(torch.tensor([3, 1, 2]), torch.tensor([1, 2, 3])) == 1.0
    assert label_accuracy(np.array([0, 0]), [1, 1]) == 0.0
    with pytest.raises(GradleakError, match="same length"):
        label_accuracy([1, 2], [1, 2, 3])
    with pytest.raises(GradleakError, match="1-D"):
        label_accuracy(torch.zeros(2, 10), torch.zeros(2, 10))
    with pytest.raises(GradleakError, match="at least one"):
        label_accuracy([], [])


# ---------------------------------------------------------------- evaluate_images


def test_evaluate_images_clamps_out_of_range_reconstruction():
    g = _gen(10)
    original = (torch.rand(2, 3, 8, 8, generator=g) > 0.5).double()  # pixels exactly 0 or 1
    recon = original * 3 - 1  # 0 -> -1, 1 -> 2: identical after clamping
    result = evaluate_images(recon, original)
    assert result.mse == (0.0, 0.0)
    assert result.psnr == (PSNR_CAP_DB, PSNR_CAP_DB)
    np.testing.assert_allclose(result.ssim, [1.0, 1.0], atol=1e-12)
    inf = evaluate_images(torch.where(original > 0.5, math.inf, -math.inf), original)
    assert inf.mse == (0.0, 0.0)


def test_evaluate_images_scores_nan_as_worst_case():
    original = distinct_batch(3, shape=(1, 8, 8))
    recon = original.clone()
    recon[1] = float("nan")
    recon[2, 0, :4] = float("nan")
    result = evaluate_images(recon, original)
    assert result.assignment == (0, 1, 2)
    worst = torch.maximum(original, 1 - original) ** 2
    assert result.mse[0] == 0.0
    assert result.mse[1] == pytest.approx(float(worst[1].mean()), abs=1e-12)
    assert result.mse[2] == pytest.approx(float(worst[2, 0, :4].sum() / 64), abs=1e-12)
    assert all(math.isfinite(v) for v in result.psnr + result.ssim)
    assert result.ssim[1] < result.ssim[2] < result.ssim[0] == pytest.approx(1.0)
    assert result.ssim[1] < 0


def test_evaluate_images_labels_only_when_both_given():
    x = distinct_batch(3)
    assert evaluate_images(x, x, predicted_labels=None, true_labels=torch.tensor([1, 2, 3])).label_accuracy is None
    out = evaluate_images(x, x, predicted_labels=torch.tensor([2, 2, 1]), true_labels=torch.tensor([1, 2, 3]))
    assert out.label_accuracy == pytest.approx(2 / 3)
    assert out.means()["label_accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(GradleakError, match="one label per image"):
        evaluate_images(x, x, predicted_labels=[1, 2], true_labels=[1, 2])


def test_evaluate_images_rejects_bad_shapes_and_normalized_originals():
    x = distinct_batch(2)
    with pytest.raises(GradleakError) as err:
        evaluate_images(x, x[:1])
    assert "(2, 3, 8, 8)" in str(err.value) and "(1, 3, 8, 8)" in str(err.value)
    with pytest.raises(GradleakError, match="denormalize"):
        evaluate_images(x, (x - 0.5) / 0.25)
    with pytest.raises(UnknownNameError):
        evaluate_images(x, x, matching="nope")


def test_evaluate_images_returns_plain_floats():
    x, y = random_pair((2, 3, 16, 16))
    result = evaluate_images(y.float(), x.float())
    for field in (result.mse, result.psnr, result.ssim):
        assert all(type(v) is float for v in field)
    assert all(type(v) is int for v in result.assignment)
