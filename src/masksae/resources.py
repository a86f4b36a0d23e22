"""Per-config access to shared resources: the tokenizer and model (loaded once per process), corpus sequences, cached or streamed activations."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from masksae import corpora
from masksae.activation_cache import ActivationCache
from masksae.activations import ActivationSet, ActivationSpec, SequenceBlocks, activation_chunks, compute_activations, token_sequences
from masksae.errors import ConfigError
from masksae.memory import available_bytes, release_memory
from masksae.models import LoadedModel, converted_model_dir, load_model
from masksae.shards import ShardedActivations, ShardWriter
from masksae.tracking import REPO_ROOT

if TYPE_CHECKING:
    from masksae.datamodule import ActivationDataModule


def cache_root(cfg: DictConfig) -> Path:
    return Path(cfg.paths.cache_dir).expanduser()


def run_dir(cfg: DictConfig, key: str) -> Path:
    output = Path(cfg.paths.output_dir) if cfg.paths.output_dir else REPO_ROOT / "outputs"
    return output / "runs" / key


@functools.lru_cache(maxsize=2)
def _tokenizer(location: str, revision: str | None) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(location, revision=revision)


def tokenizer_for(cfg: DictConfig) -> PreTrainedTokenizerBase:
    """The model's tokenizer alone (converting a GGUF model once if needed), for checks before any compute."""
    model_cfg = cfg.model
    if model_cfg.source == "hub":
        return _tokenizer(model_cfg.hf_id, model_cfg.get("revision"))
    return _tokenizer(str(converted_model_dir(model_cfg, cache_root(cfg))), None)


@functools.lru_cache(maxsize=1)
def _cached_model(model_yaml: str, cache: str, device: str) -> LoadedModel:
    return load_model(json.loads(model_yaml), Path(cache), device)


def shared_model(cfg: DictConfig) -> LoadedModel:
    """The LLM, loaded once per process (a local multirun trains every grid point with one load)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return _cached_model(json.dumps(OmegaConf.to_container(cfg.model, resolve=True)), str(cache_root(cfg)), device)


def activation_spec(cfg: DictConfig, split: str, n_tokens: int, mask_prob: float, mask_token_id: int | None) -> ActivationSpec:
    """The activation key's fields; clean text (mask_prob 0) is keyed without a mask token, so every grid point shares it."""
    return ActivationSpec(
        model=cfg.model.name,
        revision=cfg.model.get("revision"),
        layer=int(cfg.layer),
        corpus=corpora.corpus_fingerprint(cfg.data),
        split=split,
        n_tokens=n_tokens,
        context_length=int(cfg.activations.context_length),
        mask_prob=float(mask_prob),
        mask_token_id=mask_token_id if mask_prob > 0 else None,
        data_seed=int(cfg.data_seed),
        dtype=str(cfg.activations.dtype),
        model_dtype=str(cfg.model.dtype),
    )


def split_sequences(cfg: DictConfig, model: LoadedModel, split: str, n_tokens: int) -> torch.Tensor:
    """Token sequences of one corpus split, enough to hold `n_tokens` tokens."""
    context = int(cfg.activations.context_length)
    documents = corpora.iter_documents(cfg.data, split, cache_root(cfg))
    return token_sequences(documents, model.tokenizer, context, math.ceil(n_tokens / context))


def clean_validation_activations(cfg: DictConfig, model: LoadedModel | None = None) -> ActivationSet:
    """Unmasked held-out activations (validation curves, core reconstruction metrics), shared by the whole grid."""
    return get_activations(cfg, model, activation_spec(cfg, "validation", int(cfg.activations.val_tokens), 0.0, None))


def validate_cache_budget(cfg: DictConfig) -> float | None:
    """`activations.cache_budget_gb`: null (no limit) or a number >= 0 (0: never cache, always stream)."""
    value = cfg.activations.get("cache_budget_gb")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0):
        raise ConfigError("activations.cache_budget_gb", value, "null (no limit) or a number of GB >= 0 (0: always stream)")
    return value


def activation_cache(cfg: DictConfig) -> ActivationCache:
    budget_gb = validate_cache_budget(cfg)
    return ActivationCache(cache_root(cfg), None if budget_gb is None else int(budget_gb * 1e9))


def row_bytes(cfg: DictConfig) -> int:
    """Bytes of one stored activation row (d_model values in activations.dtype)."""
    return int(cfg.model.d_model) * getattr(torch, str(cfg.activations.dtype)).itemsize


def cache_bytes(spec: ActivationSpec, d_model: int) -> int:
    """Upper bound of a cache's size on disk (every position counted, special ones included)."""
    n_tokens = math.ceil(spec.n_tokens / spec.context_length) * spec.context_length
    return n_tokens * (d_model * getattr(torch, spec.dtype).itemsize + 1) + 4096


def shard_rows(cfg: DictConfig) -> int:
    """Rows per cache shard: `activations.shard_mb` of activations (what a builder holds in memory)."""
    return max(1, int(float(cfg.activations.shard_mb) * 1e6 // (row_bytes(cfg) + 1)))


def buffer_rows(cfg: DictConfig) -> int:
    """Rows of the training shuffle buffer: `activations.shuffle_buffer_mb` of activations, at least one batch."""
    return max(int(cfg.training.batch_size), int(float(cfg.activations.shuffle_buffer_mb) * 1e6 // row_bytes(cfg)))


def _writer_builder(cfg: DictConfig, model: LoadedModel | None, spec: ActivationSpec) -> Callable[[ShardWriter], None]:
    def build(writer: ShardWriter) -> None:
        llm = model or shared_model(cfg)
        sequences_NS = split_sequences(cfg, llm, spec.split, spec.n_tokens)
        chunks = activation_chunks(llm, sequences_NS, spec, int(cfg.activations.llm_batch_size), first_sequence=writer.sequences_done)
        for acts_TD, masked_T, sequences_done in chunks:
            writer.append(acts_TD, masked_T, sequences_done)
        release_memory()  # the LLM pass's temporaries: training must not start on a heap they grew

    return build


def _from_cache(cfg: DictConfig, model: LoadedModel | None, spec: ActivationSpec) -> ShardedActivations | None:
    """The shared cache's set (built on first use, shard by shard), or None when it would not fit the cache budget."""
    d_model = int(cfg.model.d_model)
    return activation_cache(cfg).get_or_build(spec, _writer_builder(cfg, model, spec), cache_bytes(spec, d_model),
                                              d_model=d_model, shard_rows=shard_rows(cfg))


def get_activations(cfg: DictConfig, model: LoadedModel | None, spec: ActivationSpec) -> ActivationSet:
    """A (small) set in memory: from the shared cache, computed on first use; computed in memory alone when it would not
    fit the cache budget. The LLM (`model`, or the process's shared one) is loaded only when they must be computed."""
    cached = _from_cache(cfg, model, spec)
    if cached is not None:
        acts_ND, masked_N = cached.to_memory()
        return ActivationSet(acts_ND, masked_N, spec)
    llm = model or shared_model(cfg)
    return compute_activations(llm, split_sequences(cfg, llm, spec.split, spec.n_tokens), spec, int(cfg.activations.llm_batch_size))


def training_data(cfg: DictConfig, model: LoadedModel | None, spec: ActivationSpec, val_acts_ND: torch.Tensor) -> ActivationDataModule:
    """The training DataModule: over the shared cache's shards, or streaming from the LLM when the cache would not fit its
    budget (the LLM, `model` or the shared one, is loaded only then or to build the cache). Memory is bounded by the
    shuffle buffer either way, not by the set."""
    from masksae.batching import CachedBlocks
    from masksae.datamodule import ActivationDataModule  # imports lightning: only where training

    train_on_masked = bool(cfg.masking.train_on_masked)
    cached = _from_cache(cfg, model, spec)
    if cached is not None:
        larger_than_memory = cached.n_bytes > available_bytes()  # reads would go to disk: fetch ahead
        source = CachedBlocks(cached, int(cfg.activations.read_block_rows), None if train_on_masked else ~cached.masked_N(),
                              read_ahead=larger_than_memory)
    else:
        model = model or shared_model(cfg)
        sequences_NS = split_sequences(cfg, model, spec.split, spec.n_tokens)
        source = SequenceBlocks(model, sequences_NS, spec, int(cfg.activations.llm_batch_size), train_on_masked=train_on_masked)
    return ActivationDataModule(source, val_acts_ND, batch_size=int(cfg.training.batch_size), epochs=int(cfg.training.epochs),
                                seed=int(cfg.seed), scale_sample=int(cfg.training.scale_sample), buffer_rows=buffer_rows(cfg))
