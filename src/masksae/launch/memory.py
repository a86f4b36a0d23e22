"""A job's peak host memory, estimated from its config before anything runs, against `launcher.mem_gb`."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from masksae.evals.store import RECENT_BYTES
from masksae.saes import resolve_d_sae

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
GB = 1e9


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak host memory of one job (bytes): what it holds throughout, plus the largest of its phases (building the
    cache, training, evals), which do not overlap."""

    always: dict[str, float]
    phases: dict[str, dict[str, float]]

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda phase: sum(self.phases[phase].values()))

    @property
    def total(self) -> float:
        return sum(self.always.values()) + sum(self.phases[self.peak_phase].values())

    def parts(self) -> dict[str, float]:
        """What the peak is made of."""
        return {**self.always, **self.phases[self.peak_phase]}

    def describe(self) -> str:
        listed = lambda parts: ", ".join(f"{name} {size / GB:.2f}" for name, size in parts.items() if size)  # noqa: E731
        phases = "; ".join(f"{phase}: {listed(parts) or 'nothing'}" for phase, parts in self.phases.items())
        return f"~{self.total / GB:.1f} GB at its peak, {self.peak_phase} (throughout: {listed(self.always)}; {phases})"


# What lowers each part when a job does not fit launcher.mem_gb.
REMEDIES = {
    "shuffle buffers": "activations.shuffle_buffer_mb",
    "shard being written": "activations.shard_mb",
    "validation set": "activations.val_tokens",
    "row index": "activations.read_block_rows (larger blocks)",
    "token sequences": "activations.cache_budget_gb (cache instead of streaming)",
    "core eval logits": "eval.core.batch_size",
}


def job_memory(cfg: DictConfig) -> MemoryEstimate:
    """The parts that grow with the settings (the rest is `launcher.runtime_gb`: interpreter and libraries). The training
    set itself is never held: caches are built a shard at a time and read memory-mapped, a buffer at a time."""
    acts = cfg.activations
    d_model = int(cfg.model.d_model)
    stored = DTYPE_BYTES.get(str(acts.dtype), 4)
    train_rows = int(acts.train_tokens)
    batch_bytes = int(cfg.training.batch_size) * d_model * 4
    buffer_bytes = max(float(acts.shuffle_buffer_mb) * 1e6, batch_bytes / 4 * stored)
    streams = acts.get("cache_budget_gb") == 0
    always = {
        "runtime": float(cfg.launcher.runtime_gb) * GB,
        "LLM weights": float(cfg.model.params_m) * 1e6 * DTYPE_BYTES.get(str(cfg.model.dtype), 4),
        "validation set": int(acts.val_tokens) * d_model * (stored + 4),  # stored copy + one float32 chunk per pass
    }
    phases = {
        "building the cache": {"shard being written": 0.0 if streams else 2 * float(acts.shard_mb) * 1e6},  # rows + serialised
        # the buffer trained on and the next (streamed: in memory; cached: the pages of their rows, mapped), two batches
        "training": {"shuffle buffers": 2 * buffer_bytes + 2 * batch_bytes,
                     "row index": train_rows * (1 + 16 / int(acts.read_block_rows)),  # masked flags, block counts, epoch order
                     "token sequences": train_rows * 16 if streams else 0.0},
        "evals": {"core eval logits": 0.0 if "core" not in cfg.eval.evals else
                  4 * int(cfg.eval.core.batch_size) * int(acts.context_length) * int(cfg.model.vocab_size) * 4,
                  "eval artifacts kept": RECENT_BYTES if cfg.eval.evals else 0.0,
                  "SAE encodes": 4 * 1024 * resolve_d_sae(cfg.sae, d_model) * 4 if cfg.eval.evals else 0.0},
    }
    return MemoryEstimate(always, phases)


def memory_problem(cfg: DictConfig) -> str | None:
    """A one-line error when the estimate exceeds launcher.mem_gb (naming what to change), else None."""
    estimate = job_memory(cfg)
    if estimate.total <= float(cfg.launcher.mem_gb) * GB:
        return None
    largest = sorted(((size, name) for name, size in estimate.parts().items() if name in REMEDIES), reverse=True)[:2]
    lower = " or ".join(REMEDIES[name] for _, name in largest)
    return (f"a job needs {estimate.describe()} but launcher.mem_gb={cfg.launcher.mem_gb} (MASKSAE_SLURM_MEM_GB): "
            f"raise launcher.mem_gb or lower {lower}")
