"""Dry-run report of a sweep: the array a cluster would get, its resources, GPU-hours and activation-cache disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from masksae.launch.memory import DTYPE_BYTES, job_memory, memory_problem
from masksae.launch.plan import SUBMITTED, Plan

def activation_key(cfg: DictConfig) -> str:
    """What determines a run's training activations (runs sharing it share one cache)."""
    fields = {name: OmegaConf.to_container(cfg[name], resolve=True) for name in ("model", "data")}
    fields.update(layer=cfg.layer, mask_prob=cfg.mask_prob, data_seed=cfg.data_seed,
                  activations={k: cfg.activations[k] for k in ("train_tokens", "context_length", "dtype")})
    return json.dumps(fields, sort_keys=True, default=str)


def cache_bytes(cfg: DictConfig) -> int:
    """Bytes of one training-activation cache: tokens x d_model x dtype size."""
    return int(cfg.activations.train_tokens) * int(cfg.model.d_model) * DTYPE_BYTES.get(str(cfg.activations.dtype), 4)


def _free_bytes(folder: Path) -> int:
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _size(n_bytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.2f} {unit}"
    return f"{n_bytes:.0f} B"


def job_hours(cfg: DictConfig, computes_cache: bool) -> float:
    """Estimated hours of one job from the throughput assumptions in `launcher` (LLM pass only when it builds the cache)."""
    tokens = int(cfg.activations.train_tokens)
    llm = tokens / float(cfg.launcher.llm_tokens_per_s) if computes_cache else 0.0
    sae = tokens * int(cfg.training.epochs) / float(cfg.launcher.sae_tokens_per_s)
    return (llm + sae + float(cfg.launcher.overhead_s)) / 3600


def report(plan: Plan, configs: list[DictConfig], launcher: DictConfig) -> str:
    """Jobs to submit, per-job resources, estimated and requested GPU-hours, and activation-cache disk against free space."""
    chosen = [(p, cfg) for p, cfg in zip(plan.points, configs, strict=True) if p.action in SUBMITTED]
    actions = {a: sum(p.action == a for p in plan.points) for a in ("skip", "running", "resume", "rerun", "new")}
    params = OmegaConf.to_container(launcher, resolve=True)
    gpus = int(params.get("gpus_per_node") or 0)
    hours = float(params.get("timeout_min") or 0) / 60
    n_jobs = len({point.task for point, _ in chosen})
    lines = [f"[dry run] sweep {plan.sweep_id}: {len(plan.points)} grid points -> {len(chosen)} runs in {n_jobs} jobs to submit "
             f"({', '.join(f'{n} {a}' for a, n in actions.items())}); launcher {plan.launcher}"]
    resources = {k: params.get(k) for k in ("partition", "account", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min",
                                             "array_parallelism", "max_num_timeout") if k in params}
    lines.append("[dry run] per job: " + ", ".join(f"{k}={v}" for k, v in resources.items()))
    if not chosen:
        return "\n".join(lines)
    caches: dict[str, DictConfig] = {}
    estimated = 0.0
    for _, cfg in chosen:
        key = activation_key(cfg)
        estimated += job_hours(cfg, key not in caches) * max(gpus, 1)
        caches.setdefault(key, cfg)
    unit = "GPU-hours" if gpus else "CPU-job-hours"
    lines.append(f"[dry run] {unit}: ~{estimated:.1f} estimated (launcher.llm_tokens_per_s={chosen[0][1].launcher.llm_tokens_per_s}, "
                 f"sae_tokens_per_s={chosen[0][1].launcher.sae_tokens_per_s}), at most {n_jobs * max(gpus, 1) * hours:.1f} requested "
                 f"({n_jobs} jobs x {max(gpus, 1)} x {hours:.1f} h time limit)")
    need = sum(cache_bytes(cfg) for cfg in caches.values())
    first = chosen[0][1]
    free = _free_bytes(Path(first.paths.cache_dir).expanduser())
    per = cache_bytes(first)
    lines.append(f"[dry run] activation caches: {len(caches)} (one per model x layer x mask rate x data seed) x ~{_size(per)} "
                 f"({first.activations.train_tokens} tokens x d_model {first.model.d_model} x {first.activations.dtype}) = {_size(need)}; "
                 f"{_size(free)} free under {first.paths.cache_dir}")
    if need > free:
        lines.append("[dry run] WARNING: the caches do not fit: run jobs that share an activation key together (packing) or "
                     "stream activations instead of caching them, or point MASKSAE_CACHE at a larger shared file system")
    largest = max((cfg for _, cfg in chosen), key=lambda cfg: job_memory(cfg).total)
    lines.append(f"[dry run] memory per job: {job_memory(largest).describe()} against launcher.mem_gb={largest.launcher.mem_gb}")
    problem = memory_problem(largest)
    if problem:
        lines.append(f"[dry run] WARNING: {problem}")
    for point, _ in chosen[:3]:
        lines.append(f"[dry run]   #{point.index} {point.action:6s} {point.name}  {' '.join(point.overrides)}")
    if len(chosen) > 3:
        lines.append(f"[dry run]   ... {len(chosen) - 3} more")
    return "\n".join(lines)
