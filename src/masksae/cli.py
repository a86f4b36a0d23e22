"""Command-line entry points (`python -m train`, `python -m evaluate`): Hydra apps with one-line errors."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from masksae.config import CONF_DIR
from masksae.console import quiet_third_parties
from masksae.errors import ConfigError, LiveRunError, OfflineError
from masksae.tracking import ensure_sweep_id

EXIT_BAD_INPUT = 2
HEADLINE_METRICS = (
    "core/l0", "core/explained_variance", "core/ce_loss_recovered", "absorption/mean_full_absorption_score",
    "absorption/mean_absorption_fraction_score", "absorption/n_letters", "sparse_probing/sae_top_1_test_accuracy",
    "sparse_probing/llm_test_accuracy", "ood/sae_auc_ood", "ood/gap_to_dense",
)


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _train_app(cfg: DictConfig) -> float | None:
    from masksae.pipeline import train_one

    quiet_third_parties()
    logging.getLogger("masksae").setLevel(logging.INFO)
    try:
        metrics = train_one(cfg)
    except (ConfigError, OfflineError, LiveRunError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    for name, values in metrics.items():
        print(f"[masksae] {name}: " + "  ".join(f"{k}={values[k]:.4g}" for k in HEADLINE_METRICS if k in values))
    return next((values.get("core/explained_variance") for values in metrics.values()), None)


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
        results = evaluate_main(cfg)
    except (ConfigError, OfflineError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    for target, metrics in results.items():
        print(f"[masksae] {target}: " + "  ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))


def evaluate() -> None:
    """`python -m evaluate run_id=...|sweep_id=...|sae_path=...`."""
    _evaluate_app()
