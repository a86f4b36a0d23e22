"""Per-config access to shared resources: the tokenizer and model (loaded once per process), corpus sequences, cached activations."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from masksae import corpora
from masksae.activations import ActivationCache, ActivationSet, ActivationSpec, compute_activations, token_sequences
from masksae.models import LoadedModel, converted_model_dir, load_model
from masksae.tracking import REPO_ROOT


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
    )


def split_sequences(cfg: DictConfig, model: LoadedModel, split: str, n_tokens: int) -> torch.Tensor:
    """Token sequences of one corpus split, enough to hold `n_tokens` tokens."""
    context = int(cfg.activations.context_length)
    documents = corpora.iter_documents(cfg.data, split, cache_root(cfg))
    return token_sequences(documents, model.tokenizer, context, math.ceil(n_tokens / context))


def clean_validation_activations(cfg: DictConfig, model: LoadedModel) -> ActivationSet:
    """Unmasked held-out activations (validation curves, core reconstruction metrics), shared by the whole grid."""
    return get_activations(cfg, model, activation_spec(cfg, "validation", int(cfg.activations.val_tokens), 0.0, None))


def get_activations(cfg: DictConfig, model: LoadedModel, spec: ActivationSpec) -> ActivationSet:
    """Activations from the shared cache, computed on first use."""
    def build() -> ActivationSet:
        sequences_NS = split_sequences(cfg, model, spec.split, spec.n_tokens)
        return compute_activations(model, sequences_NS, spec, int(cfg.activations.llm_batch_size))

    return ActivationCache(cache_root(cfg)).get_or_build(spec, build)
