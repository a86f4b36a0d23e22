"""Pins on the activation caches that a sweep's submitted jobs will read, so the cache budget never evicts them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import DictConfig

from masksae.activation_cache import ActivationCache
from masksae.activations import ActivationSpec
from masksae.errors import OfflineError
from masksae.launch.plan import SUBMITTED, Plan

log = logging.getLogger(__name__)
# A pin lapses by itself after this long (a driver that dies cannot leave caches unevictable for ever); the driver
# removes its pins when the sweep's jobs have ended, and a job that runs holds its own lease while it reads.
PIN_TTL_S = 3 * 24 * 3600.0


@dataclass(frozen=True)
class Pin:
    """One submitted point's claim on one cached activation set."""

    cache: ActivationCache
    spec: ActivationSpec
    holder: str


def job_specs(cfg: DictConfig) -> list[ActivationSpec]:
    """The activation sets a job reads: its (masked) training set and the clean validation set."""
    from masksae.pipeline import validate_config
    from masksae.resources import activation_spec

    mask_token_id = validate_config(cfg)
    return [activation_spec(cfg, "train", int(cfg.activations.train_tokens), float(cfg.mask_prob), mask_token_id),
            activation_spec(cfg, "validation", int(cfg.activations.val_tokens), 0.0, None)]


def pin_caches(plan: Plan, configs: list[DictConfig]) -> list[Pin]:
    """Pin the caches of every point that is about to be submitted, where a cache budget could evict them."""
    from masksae.resources import activation_cache

    pins: list[Pin] = []
    for point, cfg in zip(plan.points, configs, strict=True):
        if point.action not in SUBMITTED or cfg.activations.get("cache_budget_gb") is None:
            continue
        try:
            specs = job_specs(cfg)
        except OfflineError as error:  # the tokenizer is not on this host: the jobs' own leases still protect reads
            log.warning("cannot pin the activation caches of %s here: %s", point.name, error)
            continue
        cache = activation_cache(cfg)
        for spec in specs:
            pin = Pin(cache, spec, f"sweep-{plan.sweep_id}-point-{point.index}")
            cache.lease(spec, pin.holder, ttl_s=PIN_TTL_S)
            pins.append(pin)
    return pins


def unpin_caches(pins: list[Pin]) -> None:
    for pin in pins:
        pin.cache.unpin(pin.spec, pin.holder)
