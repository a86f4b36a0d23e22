"""The probes' regularisers are what they claim on the installed scikit-learn (pyproject requires >= 1.8, where
`l1_ratio=1.0` is the L1 penalty; before 1.8 the default penalty="l2" silently won)."""

from __future__ import annotations

import numpy as np

from masksae.evals.probes import fit_probe


def _task(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two informative features among 60 noise ones."""
    rng = np.random.default_rng(seed)
    x_NF = rng.normal(size=(400, 62))
    y_N = (x_NF[:, 0] + x_NF[:, 1] + 0.3 * rng.normal(size=400) > 0).astype(int)
    return x_NF, y_N


def test_the_l1_probe_zeroes_most_noise_features_and_the_l2_probe_none() -> None:
    x_NF, y_N = _task()
    l1_coef = fit_probe(x_NF, y_N, c=0.05, l1=True)[-1].coef_[0]
    l2_coef = fit_probe(x_NF, y_N, c=0.05, l1=False)[-1].coef_[0]
    assert np.count_nonzero(l1_coef[2:]) < 15 and np.all(l1_coef[:2] != 0)
    assert np.count_nonzero(l2_coef) == 62
