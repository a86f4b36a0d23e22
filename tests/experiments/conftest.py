"""A real tiny sweep shared by the report and UI tests: 4 smoke runs through the pipeline into the session's store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from masksae.pipeline import train_one
from masksae.tracking import SWEEP_ID_ENV

SWEEP_ID = "reporttest01"
EXPERIMENT = "report-test"


def report_cfg(mlflow_uri: str, out: Path, sweep_id: object = SWEEP_ID) -> DictConfig:
    """The `python -m experiments.report` config of the tiny sweep, written to `out`."""
    return OmegaConf.create({"sweep_id": sweep_id, "out": str(out), "confidence": 0.95,
                             "tracking": {"uri": mlflow_uri, "experiment": EXPERIMENT}})


@pytest.fixture(scope="package")
def sweep(make_cfg, gemma, mlflow_uri) -> MlflowClient:
    """mask_prob {0, 0.2} x seed {0, 1}, TopK k=16, core + absorption evals, one sweep id."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SWEEP_ID_ENV, SWEEP_ID)
        for mask_prob in (0, 0.2):
            for seed in (0, 1):
                train_one(make_cfg("debug=smoke", "sae=topk", "sae.k=16", f"mask_prob={mask_prob}", f"seed={seed}",
                                   "eval.evals=[core,absorption]", f"tracking.experiment={EXPERIMENT}"))
    return MlflowClient(tracking_uri=mlflow_uri)
