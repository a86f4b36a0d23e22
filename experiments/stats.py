"""Statistics over seeds: mean with a t-based confidence interval, paired differences matched on (seed, data_seed) with
their t-test p-value, and Benjamini-Hochberg q-values over a family of such tests."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, replace

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
# Paired differences no larger than this fraction of the values are float rounding (float32 metrics), not an effect.
FLOAT_NOISE = 1e-6


@dataclass(frozen=True)
class Estimate:
    """A mean over n values with its confidence interval (NaN bounds when n < 2: one value gives no interval)."""

    mean: float
    low: float
    high: float
    n: int
    p: float = math.nan  # paired differences: two-sided one-sample t-test of mean 0
    q: float = math.nan  # p adjusted for the false discovery rate over its family (Benjamini-Hochberg)

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low)

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly on one side of zero."""
        return self.has_interval and (self.low > 0 or self.high < 0)

    def cell(self, digits: int = 3) -> str:
        """Table text: 'n/a', 'mean (n=1)' or 'mean [low, high]'."""
        if self.n == 0:
            return "n/a"
        if not self.has_interval:
            return f"{self.mean:.{digits}f} (n={self.n})"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


NO_DATA = Estimate(math.nan, math.nan, math.nan, 0)


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_ci(values: Iterable[float | None], confidence: float = CONFIDENCE) -> Estimate:
    """Mean and Student-t interval of the finite values (missing and NaN values are left out)."""
    kept = _finite(values)
    n = len(kept)
    if n == 0:
        return NO_DATA
    mean = sum(kept) / n
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def paired_differences(treated: Mapping[Hashable, float | None], baseline: Mapping[Hashable, float | None]) -> dict[Hashable, float]:
    """treated - baseline for every pair key (e.g. (seed, data_seed)) with a finite value on both sides."""
    return {
        key: float(treated[key]) - float(baseline[key])
        for key in treated.keys() & baseline.keys()
        if _finite([treated[key]]) and _finite([baseline[key]])
    }


def paired_ci(treated: Mapping[Hashable, float | None], baseline: Mapping[Hashable, float | None],
              confidence: float = CONFIDENCE) -> Estimate:
    """Mean paired difference (treated - baseline) over shared keys, with its t interval and t-test p-value."""
    differences = list(paired_differences(treated, baseline).values())
    estimate = mean_ci(differences, confidence)
    if estimate.n < 2:
        return estimate
    magnitude = max(abs(float(value)) for value in (*treated.values(), *baseline.values()) if _finite([value]))
    if max(abs(difference) for difference in differences) <= FLOAT_NOISE * magnitude:  # e.g. an L0 calibrated to its target
        return replace(estimate, p=1.0)
    spread = max(differences) - min(differences)
    p = float(scipy_stats.ttest_1samp(differences, 0.0).pvalue) if spread > 0 else 0.0
    return replace(estimate, p=p)


def benjamini_hochberg(estimates: list[Estimate]) -> list[Estimate]:
    """The estimates with q set: their p-values adjusted over the whole list as one family (those without a p keep q NaN)."""
    tested = [index for index, estimate in enumerate(estimates) if math.isfinite(estimate.p)]
    adjusted = scipy_stats.false_discovery_control([estimates[i].p for i in tested], method="bh") if tested else []
    out = list(estimates)
    for index, q in zip(tested, adjusted, strict=True):
        out[index] = replace(out[index], q=float(q))
    return out
