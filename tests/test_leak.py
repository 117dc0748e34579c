"""BRR and WSRR (SoK, Du et al., App. C.ii) on hand-computed cases."""

import math

import pytest

from gradleak.errors import GradleakError
from gradleak.metrics.leak import leak_rates, leaks


def test_indicator_needs_both_thresholds():
    assert leaks([18.0, 30.0, 17.9, 25.0, math.nan], [0.1, 0.2, 0.05, 0.0, 0.0]) == [True, False, False, True, False]
    assert leaks([20.0], [0.3], perceptual_threshold=0.5) == [True]


def test_rates_over_cells():
    cells = [
        ([20, 20, 10, 10], [0.05, 0.05, 0.5, 0.5]),  # 2 of 4 leak
        ([10, 10, 10, 10], [0.5, 0.5, 0.5, 0.5]),  # none
        ([25, 10, 10, 10], [0.01, 0.5, 0.5, 0.5]),  # 1 of 4
    ]
    rates = leak_rates(cells)
    assert rates.brr == pytest.approx((0.5 + 0 + 0.25) / 3)
    assert rates.wsrr == pytest.approx(2 / 3)
    assert (rates.cells, rates.samples) == (3, 12)
    strict = leak_rates(cells, psnr_threshold=21)
    assert strict.brr == pytest.approx(0.25 / 3) and strict.wsrr == pytest.approx(1 / 3)


@pytest.mark.parametrize("cells, kwargs, message", [
    ([], {}, "at least one cell"),
    ([([20.0], [0.1, 0.2])], {}, "one value per sample"),
    ([([], [])], {}, "cell 0 holds no samples"),
    ([([20.0], [0.1])], {"psnr_threshold": math.inf}, "psnr_threshold must be a finite number"),
])
def test_bad_input(cells, kwargs, message):
    with pytest.raises(GradleakError, match=message):
        leak_rates(cells, **kwargs)
