"""The training runs of one sweep read back from MLflow: setting, mask rate, pairing seeds and metrics of each."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from masksae.errors import ConfigError

# The first of these params set (not 'None') names a run's sparsity: k for the TopK family, the target L0 of
# JumpReLU, the L1 coefficient of ReLU SAEs.
SPARSITY_PARAMS = ("sae.k", "sae.target_l0", "sae.l1_coeff", "sae.sparsity_coeff")
REPORT_TAG = "report"


@dataclass(frozen=True, order=True)
class Setting:
    """What a table row group holds fixed: model, layer, architecture, sparsity and dictionary size."""

    model: str
    layer: int
    architecture: str
    sparsity: str
    d_sae: str

    @property
    def label(self) -> str:
        return f"{self.model} L{self.layer} {self.architecture} {self.sparsity} d_sae={self.d_sae}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "_", self.label).strip("_")


@dataclass(frozen=True)
class SweepRun:
    """One FINISHED training run of the sweep."""

    run_id: str
    setting: Setting
    mask_prob: float
    seed: int
    data_seed: int
    git_sha: str
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def pair(self) -> tuple[int, int]:
        """Runs that differ only in mask_prob share this key (DESIGN: pairing by seed and data_seed)."""
        return (self.seed, self.data_seed)


def _set(params: Mapping[str, str], name: str) -> bool:
    return params.get(name) not in (None, "None", "null")


def setting_of(params: Mapping[str, str]) -> Setting:
    """The Setting named by a run's flattened config params."""
    sparsity = next((f"{name.split('.')[1]}={params[name]}" for name in SPARSITY_PARAMS if _set(params, name)), "n/a")
    d_sae = f"{params['sae.expansion_factor']}x" if _set(params, "sae.expansion_factor") else params.get("sae.d_sae", "n/a")
    return Setting(params.get("model.name", "n/a"), int(params.get("layer", -1)), params.get("sae.architecture", "n/a"), sparsity, d_sae)


def sweep_run(run: Any) -> SweepRun:
    """A SweepRun from an MLflow run entity."""
    params = run.data.params
    return SweepRun(
        run_id=run.info.run_id, setting=setting_of(params), mask_prob=float(params["mask_prob"]), seed=int(params["seed"]),
        data_seed=int(params["data_seed"]), git_sha=run.data.tags.get("git_sha", "unknown"), metrics=dict(run.data.metrics),
    )


def search_all(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    """Every run matching the filter, newest first, across result pages."""
    found, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, order_by=["attribute.start_time DESC"], page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def experiment_id(client: Any, name: str) -> str:
    """The id of an existing experiment, else ConfigError."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise ConfigError("tracking.experiment", name, "an existing MLflow experiment")
    return experiment.experiment_id


def is_training_run(run: Any) -> bool:
    """A run that trained an SAE (not the sweep's report run, not an evaluation of a saved folder)."""
    tags = run.data.tags
    return tags.get(REPORT_TAG) != "true" and "sae_path" not in tags and "mask_prob" in run.data.params


def load_sweep(client: Any, experiment: str, sweep_id: str) -> tuple[list[SweepRun], list[str]]:
    """The sweep's FINISHED training runs (the newest where a grid point ran twice) and notes on what was left out."""
    found = search_all(client, experiment_id(client, experiment), f"tags.sweep_id = '{sweep_id}' and attributes.status = 'FINISHED'")
    runs = [sweep_run(run) for run in found if is_training_run(run)]
    if not runs:
        raise ConfigError("sweep_id", sweep_id, f"the sweep_id tag of FINISHED training runs in MLflow experiment {experiment!r}")
    newest: dict[tuple[Setting, float, int, int], SweepRun] = {}
    for run in runs:
        newest.setdefault((run.setting, run.mask_prob, run.seed, run.data_seed), run)
    notes = []
    if len(newest) < len(runs):
        notes.append(f"{len(runs) - len(newest)} older run(s) of a grid point that ran again were left out (the newest is used)")
    return sorted(newest.values(), key=lambda r: (r.setting, r.mask_prob, r.pair)), notes
