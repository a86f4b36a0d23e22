"""Settings left null that follow from others: the SAE's learning rate from its width, and the dead-latent window from
the run's length (so one preset suits a 4k-latent demo and a 65k-latent, 200M-token cluster run)."""

from __future__ import annotations

import copy
import math

from omegaconf import DictConfig, open_dict

from masksae.errors import ConfigError

# dictionary_learning's and SAELens's automatic learning rate (Gao et al. 2024, fig. 3): 2e-4 at 2^14 latents, scaled as
# 1 / sqrt(d_sae): 4e-4 at 4096, 1e-4 at 65,536.
LR_AT_16K_LATENTS = 2e-4
# A latent counts as dead after a quarter of the run's training tokens without firing, at most dictionary_learning's
# 10M tokens: 200k of a default run's 800k (2 epochs of 400k), 10M of the paper's 100-200M.
DEAD_WINDOW_FRACTION = 0.25
DEAD_WINDOW_MAX_TOKENS = 10_000_000


def auto_lr(d_sae: int) -> float:
    return LR_AT_16K_LATENTS / math.sqrt(d_sae / 2**14)


def auto_dead_window(train_tokens: int, epochs: int, batch_size: int) -> int:
    return max(batch_size, min(DEAD_WINDOW_MAX_TOKENS, int(DEAD_WINDOW_FRACTION * train_tokens * epochs)))


def with_auto_settings(cfg: DictConfig) -> DictConfig:
    """A copy of `cfg` with `sae.lr` and `training.dead_after_tokens` filled in where they are null (set ones are kept)."""
    from masksae.saes import resolve_d_sae

    filled = copy.deepcopy(cfg)
    with open_dict(filled):
        if filled.sae.get("lr") is None:
            filled.sae.lr = auto_lr(resolve_d_sae(filled.sae, int(filled.model.d_model)))
        if filled.training.get("dead_after_tokens") is None:
            training = filled.training
            filled.training.dead_after_tokens = auto_dead_window(int(filled.activations.train_tokens), int(training.epochs), int(training.batch_size))
    value = filled.training.dead_after_tokens
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError("training.dead_after_tokens", value, "null (a quarter of the run's training tokens, at most 10M) or a positive integer")
    return filled
