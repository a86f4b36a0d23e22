"""Report statistics on hand-computed numbers: mean, t-interval, paired differences matched on (seed, data_seed)."""

from __future__ import annotations

import math

import pytest

from experiments.stats import mean_ci, paired_ci, paired_differences

T_975_DF2 = 4.302653  # Student t quantile 0.975 with 2 degrees of freedom (tables)


def test_mean_and_t_interval_of_three_values() -> None:
    est = mean_ci([1.0, 2.0, 3.0])
    half = T_975_DF2 * 1.0 / math.sqrt(3)  # sd = 1
    assert (est.mean, est.n) == (2.0, 3)
    assert est.low == pytest.approx(2.0 - half, abs=1e-6) and est.high == pytest.approx(2.0 + half, abs=1e-6)
    assert est.cell() == "2.000 [-0.484, 4.484]"
    assert not est.excludes_zero


def test_missing_values_are_left_out_and_one_value_has_no_interval() -> None:
    assert mean_ci([None, float("nan")]).cell() == "n/a"
    single = mean_ci([0.5, None])
    assert single.n == 1 and not single.has_interval and single.cell() == "0.500 (n=1)"
    assert mean_ci([2.0, 2.0]).cell() == "2.000 [2.000, 2.000]"
    assert mean_ci([1.0, 2.0, 3.0], confidence=0.5).high < mean_ci([1.0, 2.0, 3.0]).high


def test_paired_difference_matches_on_shared_keys_only() -> None:
    treated = {(0, 0): 1.5, (1, 0): 2.5, (2, 0): 4.0, (3, 0): 9.0, (5, 0): float("nan")}
    baseline = {(0, 0): 1.0, (1, 0): 2.0, (2, 0): 3.0, (4, 0): 7.0, (5, 0): 1.0}
    assert paired_differences(treated, baseline) == {(0, 0): 0.5, (1, 0): 0.5, (2, 0): 1.0}
    est = paired_ci(treated, baseline)
    sd = math.sqrt(1 / 12)  # differences 0.5, 0.5, 1.0
    assert est.n == 3 and est.mean == pytest.approx(2 / 3)
    assert est.high - est.mean == pytest.approx(T_975_DF2 * sd / math.sqrt(3), abs=1e-6)
    assert not est.excludes_zero  # [-0.050, 1.384]
    shifted = paired_ci({(s, 0): 10.0 + s * 0.1 for s in range(4)}, {(s, 0): 1.0 + s * 0.11 for s in range(4)})
    assert shifted.excludes_zero and shifted.mean == pytest.approx(9.0 - 0.01 * 1.5)
