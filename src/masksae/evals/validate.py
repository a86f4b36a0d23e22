"""Checks of the `eval` config group before any compute: suites, sizes, thresholds and task specs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from masksae.config import plain
from masksae.errors import ConfigError
from masksae.evals.suites import KNOWN_EVALS, tasks_in_use
from masksae.evals.tasks import validate_task_spec

POSITIVE_INTS = (
    "llm_batch_size", "core.ce_sequences", "core.batch_size", "absorption.words_per_letter", "absorption.icl_examples",
    "absorption.max_k", "absorption.min_letters", "absorption.max_absorbing_latents", "absorption.k_sparse_probe_batch_size",
    "sparse_probing.train_per_class",
    "sparse_probing.test_per_class", "sparse_probing.context_length", "ood.ood_per_class", "ood.k",
    "inspection.latents", "inspection.absorbing_latents", "inspection.sequences", "inspection.contexts", "inspection.window",
)
FRACTIONS = ("absorption.test_fraction", "absorption.f1_jump_threshold", "absorption.min_probe_f1", "absorption.full_absorption_cos",
             "absorption.fraction_cos", "absorption.projection_fraction")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(eval_cfg: DictConfig, key: str, ok: Callable[[Any], bool], allowed: str) -> None:
    value = OmegaConf.select(eval_cfg, key)
    if not ok(value):
        raise ConfigError(f"eval.{key}", value, allowed)


def _check_task_lists(eval_cfg: DictConfig) -> None:
    defined = sorted(eval_cfg.get("tasks") or {})
    for suite in ("sparse_probing", "ood"):
        for name in eval_cfg[suite].tasks:
            if name not in defined:
                raise ConfigError(f"eval.{suite}.tasks", name, f"a task defined under eval.tasks: {', '.join(defined)}")


def validate_eval_config(eval_cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad `eval.*` key, its value and what is allowed."""
    evals = list(eval_cfg.evals)
    if any(name not in KNOWN_EVALS for name in evals):
        raise ConfigError("eval.evals", evals, f"a list drawn from {', '.join(KNOWN_EVALS)} ([]: train and export only)")
    _check(eval_cfg, "seed", lambda v: _is_int(v) and v >= 0, "a non-negative integer")
    for key in POSITIVE_INTS:
        _check(eval_cfg, key, lambda v: _is_int(v) and v >= 1, "a positive integer")
    for key in FRACTIONS:
        _check(eval_cfg, key, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, "a number in [0, 1)")
    _check(eval_cfg, "absorption.prompt_template", lambda v: isinstance(v, str) and v.count("{word}") == 1,
           "a string containing {word} once")
    _check(eval_cfg, "absorption.leading_space_words", lambda v: isinstance(v, bool),
           "true (SAEBench's word set: with and without a leading space) or false (no leading space)")
    _check(eval_cfg, "absorption.probe", lambda v: v in ("saebench", "sklearn"),
           "saebench (SAEBench's BCE probe with pos_weight) or sklearn (balanced scikit-learn logistic regression)")
    _check(eval_cfg, "sparse_probing.ks", lambda v: v is not None and len(v) > 0 and all(_is_int(k) and k >= 1 for k in v),
           "a non-empty list of positive integers")
    _check(eval_cfg, "ood.c_grid", lambda v: v is not None and len(v) > 0 and all(isinstance(c, (int, float)) and c > 0 for c in v),
           "a non-empty list of positive numbers")
    _check(eval_cfg, "ood.representation", lambda v: v in ("last_token", "mean"), "last_token (sae-probes) or mean")
    _check_task_lists(eval_cfg)
    for name in tasks_in_use(eval_cfg):
        validate_task_spec(name, plain(eval_cfg.tasks[name]))
