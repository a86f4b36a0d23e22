"""The eval suites by name and the task sets the enabled ones read: config reading only (no eval code is imported)."""

from __future__ import annotations

from omegaconf import DictConfig

KNOWN_EVALS = ("core", "absorption", "sparse_probing", "ood")


def tasks_in_use(eval_cfg: DictConfig) -> list[str]:
    """Names of the task datasets that the enabled probing evals read."""
    names = set()
    if "sparse_probing" in eval_cfg.evals:
        names |= set(eval_cfg.sparse_probing.tasks)
    if "ood" in eval_cfg.evals:
        names |= set(eval_cfg.ood.tasks)
    return sorted(names)
