"""Leak identification: nearest neighbours of reconstructions among a client's images."""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradleak.errors import GradleakError, UnknownNameError
from gradleak.metrics import METRICS, ImageMetric
from gradleak.metrics.functional import mse, psnr, ssim
from gradleak.metrics.identify import Identification, identify

PIXEL_METRICS = {"psnr": psnr, "ssim": ssim, "mse": mse}
HIGHER_IS_CLOSER = {"psnr": True, "ssim": True, "mse": False}


def images(n: int, seed: int = 0, side: int = 24) -> torch.Tensor:
    """Smooth random RGB images in [0, 1] (bilinear upsampling of 6x6 noise), float64."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=gen, dtype=torch.float64)
    return F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False).clamp(0, 1)


def noisy(x: torch.Tensor, seed: int = 1, scale: float = 0.02) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (x + scale * torch.randn(x.shape, generator=gen, dtype=x.dtype)).clamp(0, 1)


def brute_force(rec: torch.Tensor, cand: torch.Tensor, metric: str) -> np.ndarray:
    fn = PIXEL_METRICS[metric]
    return np.array([[float(fn(rec[j : j + 1], cand[i : i + 1])[0]) for i in range(cand.shape[0])]
                     for j in range(rec.shape[0])])


def constant(values, side: int = 8) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(-1, 1, 1, 1).expand(-1, 3, side, side).clone()


def test_registry_entries():
    # identification reads the one metric registry: every metric can identify
    assert {"lpips", "mse", "psnr", "ssim", "stlpips"} <= set(METRICS.names())
    for name, higher in HIGHER_IS_CLOSER.items():
        entry = METRICS.get(name)
        assert isinstance(entry, ImageMetric) and entry.higher_is_better is higher
    assert not METRICS.get("lpips").higher_is_better
    assert not METRICS.get("stlpips").higher_is_better


@pytest.mark.parametrize("metric", sorted(PIXEL_METRICS))
def test_noisy_copy_identifies_its_source(metric):
    cand = images(6)
    truth = [3, 0, 5, 3]
    result = identify(noisy(cand[truth]), cand, true_index=truth, metric=metric)
    assert result.metric == metric
    assert result.nearest == (3, 0, 5, 3)
    assert result.true_index == (3, 0, 5, 3)
    assert result.true_rank == (0, 0, 0, 0)
    assert result.identified == (True, True, True, True)
    assert result.rate == 1.0
    assert all(isinstance(k, int) for k in result.nearest)


@pytest.mark.parametrize("metric", sorted(PIXEL_METRICS))
def test_wrong_source_is_not_identified_and_ranked(metric):
    cand = images(6, seed=3)
    rec = noisy(cand[[2]], seed=4)
    result = identify(rec, cand, true_index=[4], metric=metric)
    assert result.nearest == (2,)
    assert result.identified == (False,)
    values = brute_force(rec, cand, metric)[0]
    closer = values > values[4] if HIGHER_IS_CLOSER[metric] else values < values[4]
    assert result.true_rank == (int(closer.sum()),)
    assert 1 <= result.true_rank[0] <= 5
    assert result.rate == 0.0


@pytest.mark.parametrize("metric", ["psnr", "mse"])
def test_rank_counts_only_strictly_closer_candidates(metric):
    # distances to 0.4: 0.4, 0.2, 0, 0.2, 0.4 -> candidates 1, 2, 3 are closer than 4; 0 ties with it
    cand = constant([0.0, 0.2, 0.4, 0.6, 0.8])
    result = identify(constant([0.4]), cand, true_index=[4], metric=metric)
    assert result.nearest == (2,)
    assert result.true_rank == (3,)
    assert result.identified == (False,)
    assert identify(constant([0.4]), cand, true_index=[0], metric=metric).true_rank == (3,)


@pytest.mark.parametrize("metric", sorted(PIXEL_METRICS))
def test_ties_pick_the_lowest_index(metric):
    a, b, c = images(3, seed=5)
    cand = torch.stack([c, a, b, a, b])
    result = identify(torch.stack([a, b]), cand, true_index=[3, 2], metric=metric)
    assert result.nearest == (1, 2)
    assert result.nearest_score == result.runner_up_score  # the duplicate is the runner-up
    assert result.true_rank == (0, 0)
    assert result.identified == (False, True)  # tied with index 1, so candidate 3 is not the nearest


@pytest.mark.parametrize("metric", sorted(PIXEL_METRICS))
def test_scores_match_brute_force(metric):
    cand = images(5, seed=6)
    rec = torch.cat([noisy(cand[[1, 4]], seed=7, scale=0.15), images(2, seed=8)])
    result = identify(rec, cand, metric=metric)
    values = brute_force(rec, cand, metric)
    for j in range(rec.shape[0]):
        order = np.argsort(-values[j] if HIGHER_IS_CLOSER[metric] else values[j], kind="stable")
        assert result.nearest[j] == order[0]
        assert abs(result.nearest_score[j] - values[j, order[0]]) <= 1e-9
        assert abs(result.runner_up_score[j] - values[j, order[1]]) <= 1e-9
    assert result.true_index == (None,) * 4 and result.true_rank == (None,) * 4
    assert result.identified == (None,) * 4 and result.rate is None


def test_single_candidate_has_no_runner_up():
    cand = images(1)
    result = identify(noisy(images(2, seed=9)), cand, true_index=[0, None])
    assert result.nearest == (0, 0)
    assert result.runner_up_score == (None, None)
    assert result.identified == (True, None) and result.true_rank == (0, None)


def test_rate_ignores_unknown_truths_and_json_is_plain():
    cand = images(5, seed=10)
    rec = noisy(cand[[0, 1, 2]], seed=11)
    result = identify(rec, cand, true_index=[0, None, 4])
    assert result.identified == (True, None, False)
    assert result.rate == 0.5
    data = result.to_json()
    assert data == json.loads(json.dumps(data))
    assert data["metric"] == "psnr" and data["rate"] == 0.5
    assert data["nearest"] == [0, 1, 2] and data["true_index"] == [0, None, 4]
    assert data["identified"] == [True, None, False] and data["true_rank"][1] is None
    assert isinstance(data["nearest_score"], list) and len(data["runner_up_score"]) == 3
    # numpy / tensor integers are accepted as indices and stored as ints
    again = identify(rec, cand, true_index=(np.int64(0), None, torch.tensor(4)))
    assert again.true_index == (0, None, 4) and type(again.true_index[2]) is int


def test_identification_is_frozen():
    result = identify(images(1), images(2))
    assert isinstance(result, Identification)
    with pytest.raises(AttributeError):
        result.metric = "ssim"


def test_metric_name_is_case_insensitive():
    cand = images(3)
    assert identify(cand, cand, metric="PSNR").metric == "psnr"


@pytest.mark.parametrize("rec_shape, cand_shape, words", [
    ((2, 3, 24, 24), (4, 1, 24, 24), "same shape"),
    ((2, 3, 24, 24), (4, 3, 24, 23), "same shape"),
    ((3, 24, 24), (4, 3, 24, 24), "reconstruction must have shape"),
    ((0, 3, 24, 24), (4, 3, 24, 24), "reconstruction must hold at least one"),
    ((2, 3, 24, 24), (0, 3, 24, 24), "candidates must hold at least one"),
])
def test_bad_shapes(rec_shape, cand_shape, words):
    with pytest.raises(GradleakError, match=words):
        identify(torch.rand(rec_shape), torch.rand(cand_shape))


@pytest.mark.parametrize("true_index, words", [
    ([0], "one entry per reconstruction \\(2\\), got 1"),
    ([0, 4], r"true_index\[1\] must be a candidate index in \[0, 4\) or None, got 4"),
    ([-1, 0], r"true_index\[0\] .* got -1"),
    ([0, True], r"true_index\[1\] .* got True"),
    ([0, 1.0], r"true_index\[1\] .* got 1.0"),
    (3, "true_index must be a sequence"),
])
def test_bad_true_index(true_index, words):
    with pytest.raises(GradleakError, match=words):
        identify(images(2), images(4), true_index=true_index)


def test_unknown_metric_lists_known_ones():
    with pytest.raises(UnknownNameError) as info:
        identify(images(1), images(2), metric="psnrr")
    message = str(info.value)
    assert "psnrr" in message and "psnr" in message.replace("'psnrr'", "") and "ssim" in message
    assert isinstance(info.value, GradleakError)


@pytest.mark.parametrize("which", ["reconstruction", "candidates"])
@pytest.mark.parametrize("bad", [1.01, -0.01, float("nan")])
def test_pixel_values_outside_unit_range(which, bad):
    rec, cand = images(2), images(3)
    target = rec if which == "reconstruction" else cand
    target[-1, 0, 5, 5] = bad
    with pytest.raises(GradleakError, match=f"{which} must hold finite pixel values in \\[0, 1\\]"):
        identify(rec, cand)


def test_pixel_tolerance_accepts_rounding():
    rec, cand = images(2), images(3)
    rec[0, 0, 0, 0] = 1.0 + 5e-7
    cand[0, 0, 0, 0] = -5e-7
    assert len(identify(rec, cand).nearest) == 2


def _stlpips_weights() -> Path | None:
    spec = find_spec("stlpips_pytorch")  # located, never imported (it imports torchvision)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights/vST0.0/alex_shift_tolerant.pth"
    return path if path.is_file() else None


def test_stlpips_identifies_noisy_copies():
    if _stlpips_weights() is None:
        pytest.skip("stlpips-pytorch weights not installed (pip install --no-deps stlpips-pytorch==0.0.2)")
    cand = images(5, seed=12, side=32).to(torch.float32)
    truth = [4, 1, 2]
    result = identify(noisy(cand[truth], seed=13), cand, true_index=truth, metric="stlpips")
    assert result.metric == "stlpips"
    assert result.nearest == (4, 1, 2) and result.rate == 1.0
    for best, second in zip(result.nearest_score, result.runner_up_score):
        assert 0.0 <= best < second  # lower is closer
