"""Command-line entry points (`python -m train`, `python -m evaluate`): Hydra apps with one-line errors."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from masksae.config import CONF_DIR
from masksae.console import quiet_third_parties
from masksae.errors import ConfigError, LiveRunError, OfflineError
from masksae.summary import print_run_summaries
from masksae.tracking import ensure_sweep_id, tracking_uri

EXIT_BAD_INPUT = 2


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _train_app(cfg: DictConfig) -> float | None:
    from masksae.pipeline import train_one

    quiet_third_parties()
    logging.getLogger("masksae").setLevel(logging.INFO)
    try:
        runs = train_one(cfg)
    except (ConfigError, OfflineError, LiveRunError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    print_run_summaries(list(runs.values()), tracking_uri(cfg.tracking.get("uri")), "Headline metrics")
    return next((run.metrics.get("core/explained_variance") for run in runs.values()), None)


def train() -> None:
    """`python -m train [overrides]` and `python -m train -m <sweep>`."""
    ensure_sweep_id(sys.argv[1:])
    _train_app()


@hydra.main(config_path=CONF_DIR, config_name="evaluate", version_base="1.3")
def _evaluate_app(cfg: DictConfig) -> None:
    from masksae.evaluation import evaluate_main

    quiet_third_parties()
    logging.getLogger("masksae").setLevel(logging.INFO)
    try:
        runs = evaluate_main(cfg)
    except (ConfigError, OfflineError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    print_run_summaries(runs, tracking_uri(cfg.tracking.get("uri")), "Headline metrics (all metrics are in each MLflow run)")


def evaluate() -> None:
    """`python -m evaluate run_id=...|sweep_id=...|sae_path=...`."""
    _evaluate_app()
