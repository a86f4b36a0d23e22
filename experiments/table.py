"""The paper's table: per setting, each mask rate's mean over seeds and its paired difference to mask_prob = 0, a
difference called only where its Benjamini-Hochberg q-value (over the setting's metrics and mask rates) is below 1 -
confidence."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from experiments.runs import Setting, SweepRun
from experiments.stats import NO_DATA, Estimate, benjamini_hochberg, mean_ci, paired_ci


@dataclass(frozen=True)
class Metric:
    """A column: MLflow metric name, header, and which direction is better (None: neither, e.g. L0)."""

    key: str
    header: str
    higher_is_better: bool | None


METRICS = (
    Metric("absorption/full_absorption_complement", "absorption: 1 - full", True),
    Metric("absorption/mean_full_absorption_score", "full absorption (raw)", False),
    Metric("absorption/mean_absorption_fraction_score", "absorption fraction (raw)", False),
    Metric("sparse_probing/sae_top_1_test_accuracy", "sparse probing top-1", True),
    Metric("ood/sae_auc_ood", "OOD AUC (SAE)", True),
    Metric("ood/gap_to_dense", "OOD gap to dense", False),
    Metric("core/explained_variance", "explained variance", True),
    Metric("core/ce_loss_recovered", "CE loss recovered", True),
    Metric("core/l0", "L0", None),
)
BASELINE = 0.0
# A monotone transform of another column: the same test, so it is not counted twice in the family; it takes that q.
SAME_TEST_AS = {"absorption/full_absorption_complement": "absorption/mean_full_absorption_score"}


@dataclass(frozen=True)
class Row:
    """One line of a setting's table: the mean of one mask rate ('mean') or its paired difference to the baseline ('paired')."""

    setting: Setting
    mask_prob: float
    kind: str
    cells: dict[str, Estimate]

    @property
    def label(self) -> str:
        return f"p={self.mask_prob:g}" if self.kind == "mean" else f"Δ p={self.mask_prob:g} − p=0"


def by_setting(runs: Iterable[SweepRun]) -> dict[Setting, dict[float, list[SweepRun]]]:
    """Runs grouped by setting, then by mask rate."""
    groups: dict[Setting, dict[float, list[SweepRun]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        groups[run.setting][run.mask_prob].append(run)
    return {setting: dict(sorted(rates.items())) for setting, rates in sorted(groups.items())}


def _by_pair(runs: list[SweepRun], key: str) -> dict[tuple[int, int], float | None]:
    return {run.pair: run.metrics.get(key) for run in runs}


def build_rows(runs: Iterable[SweepRun], confidence: float) -> list[Row]:
    """Mean rows for every mask rate, then paired-difference rows for every rate above the baseline."""
    rows = []
    for setting, rates in by_setting(runs).items():
        for p, members in rates.items():
            rows.append(Row(setting, p, "mean", {m.key: mean_ci((r.metrics.get(m.key) for r in members), confidence) for m in METRICS}))
        baseline = rates.get(BASELINE, [])
        treated = {p: members for p, members in rates.items() if p != BASELINE}
        paired = [{m.key: paired_ci(_by_pair(members, m.key), _by_pair(baseline, m.key), confidence) if baseline else NO_DATA
                   for m in METRICS} for members in treated.values()]
        rows += [Row(setting, p, "paired", cells) for p, cells in zip(treated, _with_q(paired), strict=True)]
    return rows


def _with_q(paired: list[dict[str, Estimate]]) -> list[dict[str, Estimate]]:
    """One family per setting: every metric of every mask rate (columns that repeat a test excluded, then given its q)."""
    family = [(index, key) for index, cells in enumerate(paired) for key in cells if key not in SAME_TEST_AS]
    adjusted = benjamini_hochberg([paired[index][key] for index, key in family])
    out = [dict(cells) for cells in paired]
    for (index, key), estimate in zip(family, adjusted, strict=True):
        out[index][key] = estimate
    for cells in out:
        for key, source in SAME_TEST_AS.items():
            if key in cells and source in cells:
                cells[key] = replace(cells[key], q=cells[source].q)
    return out


def write_csv(rows: list[Row], path: Path) -> Path:
    """The table in long form: one line per (setting, mask rate, kind, metric)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "layer", "architecture", "sparsity", "d_sae", "mask_prob", "kind", "metric", "mean", "ci_low", "ci_high", "n",
                         "p", "q_bh"])
        for row in rows:
            s = row.setting
            for key, est in row.cells.items():
                writer.writerow([s.model, s.layer, s.architecture, s.sparsity, s.d_sae, row.mask_prob, row.kind, key,
                                 est.mean, est.low, est.high, est.n, est.p, est.q])
    return path


def called(estimate: Estimate, confidence: float) -> bool:
    """A paired difference counts as moved: its false-discovery-adjusted q is below 1 - confidence."""
    return estimate.q < 1 - confidence


def verdict(metric: Metric, estimate: Estimate, confidence: float) -> str:
    """'better' / 'worse' / 'changed' where the difference is called, else ''."""
    if not called(estimate, confidence):
        return ""
    if metric.higher_is_better is None:
        return "changed"
    return "better" if (estimate.mean > 0) == metric.higher_is_better else "worse"


def markdown_table(rows: list[Row], confidence: float) -> str:
    """One setting's rows as a markdown table; paired cells called moved carry '*' and their q."""
    lines = ["| | n | " + " | ".join(m.header for m in METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for row in rows:
        n = max(est.n for est in row.cells.values())
        cells = [row.cells[m.key].cell() + (f" * (q={row.cells[m.key].q:.3f})" if row.kind == "paired" and called(row.cells[m.key], confidence) else "")
                 for m in METRICS]
        lines.append(f"| {row.label} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
