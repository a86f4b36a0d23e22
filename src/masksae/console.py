"""The console of `python -m train` / `python -m evaluate`: each message once, in Hydra's log format, without
third-party advertisements and other packages' deprecation warnings."""

from __future__ import annotations

import logging
import os
import warnings

from masksae.progress import on_terminal


class _DropAdvertisements(logging.Filter):
    """Lightning's tip to install its cloud logger, printed by every Trainer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_third_parties() -> None:
    """Lightning gives its `lightning` logger a handler of its own when imported, and its records also reach the root
    logger Hydra configured: each line was printed twice. Its handlers go, Hydra's stays."""
    import lightning  # noqa: F401  (its loggers and handlers exist once it is imported)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdvertisements())
    for category in (DeprecationWarning, FutureWarning):  # ours still show: they are ours to fix
        warnings.filterwarnings("ignore", category=category, module=r"^(?!masksae)")
    # sbatch runs the job as SLURM's own task; Lightning suggests srun because the command exists
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used")
    if not on_terminal():  # tqdm bars of Hugging Face and MLflow downloads: carriage returns in a log file
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
