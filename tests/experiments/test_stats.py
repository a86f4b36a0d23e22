"""Report statistics on hand-computed numbers: mean, t-interval, paired differences matched on (seed, data_seed), their
t-test p-values and Benjamini-Hochberg q-values; the table calls a difference only where its q is small."""

from __future__ import annotations

import math

import pytest

from experiments.runs import Setting, SweepRun
from experiments.stats import Estimate, benjamini_hochberg, mean_ci, paired_ci, paired_differences
from experiments.table import build_rows, verdict, METRICS

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


def test_paired_p_value_is_the_one_sample_t_test() -> None:
    est = paired_ci({(s, 0): d for s, d in enumerate([0.5, 0.5, 1.0])}, {(s, 0): 0.0 for s in range(3)})
    t = (2 / 3) / (math.sqrt(1 / 12) / math.sqrt(3))  # mean / (sd / sqrt(n)) = 4.0
    assert t == pytest.approx(4.0) and est.p == pytest.approx(0.0571909, abs=1e-6)  # 2 * (1 - T_2(4.0)), tables


def test_benjamini_hochberg_q_values_by_hand() -> None:
    ps = [0.01, 0.04, 0.03, 0.005, math.nan]
    q = [e.q for e in benjamini_hochberg([Estimate(0, 0, 0, 3, p=p) for p in ps])]
    # sorted p: 0.005, 0.01, 0.03, 0.04 (m = 4): q = min over later ranks of p * m / rank = 0.02, 0.02, 0.04, 0.04
    assert q[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02]) and math.isnan(q[4])


def _runs(effects: dict[str, list[float]]) -> list[SweepRun]:
    """Three seeds at p=0 (all metrics 0) and p=0.1 (metric m = effects[m][seed])."""
    setting = Setting("m", 6, "topk", "k=64", "4096")
    base = [SweepRun(f"b{s}", setting, 0.0, s, 0, "sha", {key: 0.0 for key in effects}) for s in range(3)]
    treated = [SweepRun(f"t{s}", setting, 0.1, s, 0, "sha", {key: values[s] for key, values in effects.items()}) for s in range(3)]
    return base + treated


def test_the_table_calls_only_what_survives_the_false_discovery_control() -> None:
    strong = [0.30, 0.31, 0.32]  # p ~ 1e-4
    marginal = [0.10, 0.13, 0.19]  # p ~ 0.02: its interval excludes 0, but among 8 tests BH does not call it
    noise = [[0.01, -0.02, 0.005], [-0.03, 0.02, 0.0], [0.02, 0.01, -0.04], [0.0, -0.01, 0.03], [0.01, 0.02, -0.01], [-0.02, 0.0, 0.01]]
    keys = [m.key for m in METRICS if m.key != "absorption/full_absorption_complement"]
    effects = {keys[0]: strong, keys[1]: marginal, **dict(zip(keys[2:], noise, strict=False))}
    [row] = [row for row in build_rows(_runs(effects), 0.95) if row.kind == "paired"]
    by_key = {m.key: m for m in METRICS}
    assert row.cells[keys[1]].excludes_zero and row.cells[keys[1]].p < 0.05  # an unadjusted test would call it
    assert verdict(by_key[keys[0]], row.cells[keys[0]], 0.95) and not verdict(by_key[keys[1]], row.cells[keys[1]], 0.95)
    assert all(not verdict(by_key[key], row.cells[key], 0.95) for key in keys[2:])


def test_differences_within_float_rounding_are_not_tested() -> None:
    """JumpReLU's L0 is calibrated to 64 in every run: a float32 rounding step between runs is no effect."""
    rounded = paired_ci({(s, 0): 64.0 + 7.62939453125e-06 for s in range(3)}, {(s, 0): 64.0 for s in range(3)})
    assert rounded.p == 1.0
    constant = paired_ci({(s, 0): 64.5 for s in range(3)}, {(s, 0): 64.0 for s in range(3)})  # a real, constant shift
    assert constant.p == 0.0
