"""LLM-side eval work done once per (model, layer, eval settings) and cached: first-letter set-up, task activations,
zero-ablation CE, the clean side of the core eval's splice."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import Any

import torch
from omegaconf import DictConfig

from masksae.config import plain
from masksae.evals import ood, probing
from masksae.evals.core import CleanReference, clean_reference, zero_ablation_ce
from masksae.evals.probes import one_vs_rest_tasks
from masksae.evals.spelling import SpellingSetup, as_setup, build_spelling_setup
from masksae.evals.store import artifact_key, cached_artifact
from masksae.evals.task_activations import TaskActivations, as_task_activations, compute_task_activations
from masksae.evals.tasks import build_task, task_fingerprint
from masksae.models import LoadedModel
from masksae.resources import cache_root

SPELLING_SETUP_KEYS = ("words_per_letter", "test_fraction", "icl_examples", "prompt_template", "leading_space_words", "probe")
# Bumped when build_spelling_setup's algorithm changes (2: SAEBench 0.6.0's word split, ICL pools, probe, re-prompted
# scoring words).
SPELLING_VERSION = 2
# Bumped when the stored baselines' probes change (2: unstandardised features and sae-probes's C selection).
PROBES_VERSION = 2
# Bumped when what clean_reference stores changes.
CORE_REFERENCE_VERSION = 1
# Bumped when the token ids of a task text change (2: a text longer than the context is cut at a word's end).
TASK_TEXTS_VERSION = 2


def _model_payload(cfg: DictConfig) -> dict[str, Any]:
    return {"model": cfg.model.name, "revision": cfg.model.get("revision"), "dtype": cfg.model.dtype, "layer": int(cfg.layer),
            "seed": int(cfg.eval.seed)}


def spelling_setup(cfg: DictConfig, model: LoadedModel) -> SpellingSetup:
    """The first-letter prompts' activations and ground-truth probe of this model and layer (built on first use)."""
    abs_cfg = cfg.eval.absorption
    payload = {**_model_payload(cfg), **{key: abs_cfg[key] for key in SPELLING_SETUP_KEYS}, "spelling": SPELLING_VERSION}

    def build() -> tuple[dict, dict]:
        return build_spelling_setup(model, int(cfg.layer), abs_cfg, int(cfg.eval.seed), int(cfg.eval.llm_batch_size))

    return as_setup(*cached_artifact(cache_root(cfg), artifact_key("spelling", payload), build))


def _baselines(eval_cfg: DictConfig, name: str, stored: TaskActivations) -> dict[str, Any]:
    """SAE-independent probe results (dense and top-k residual probes), computed once with the activations: sparse
    probing on mean-pooled residuals, OOD on `eval.ood.representation`."""
    seed = int(eval_cfg.seed)
    tasks = one_vs_rest_tasks(name, stored.labels, stored.splits, seed)
    ks, c_grid = list(eval_cfg.sparse_probing.ks), list(eval_cfg.ood.c_grid)
    pooled_ND, ood_ND = stored.pooled_residuals().numpy(), stored.residuals(str(eval_cfg.ood.representation)).numpy()
    return {
        "residual": {task.name: probing.residual_scores(pooled_ND, task, ks) for task in tasks},
        "dense_ood": {task.name: ood.dense_scores(ood_ND, task, c_grid, seed) for task in tasks if len(task.ood)},
    }


def task_activations(cfg: DictConfig, model: LoadedModel, name: str) -> TaskActivations:
    """Activations of one task dataset, with its residual baselines in `info` (built on first use)."""
    eval_cfg = cfg.eval
    spec = plain(eval_cfg.tasks[name])
    sizes = {"n_train": int(eval_cfg.sparse_probing.train_per_class), "n_test": int(eval_cfg.sparse_probing.test_per_class),
             "n_ood": int(eval_cfg.ood.ood_per_class) if name in eval_cfg.ood.tasks else 0}
    payload = {**_model_payload(cfg), "task": name, "fingerprint": task_fingerprint(name, spec), **sizes,
               "context_length": int(eval_cfg.sparse_probing.context_length), "ks": list(eval_cfg.sparse_probing.ks),
               "c_grid": list(eval_cfg.ood.c_grid), "ood_representation": str(eval_cfg.ood.representation), "probes": PROBES_VERSION,
               "texts": TASK_TEXTS_VERSION}

    def build() -> tuple[dict, dict]:
        data = build_task(name, spec, seed=int(eval_cfg.seed), cache_root=cache_root(cfg), **sizes)
        examples = [(text, split) for split in ("train", "test", "ood") for text in getattr(data, split)]
        acts_TD, example_T = compute_task_activations(model, int(cfg.layer), [text.text for text, _ in examples],
                                                      int(eval_cfg.sparse_probing.context_length), int(eval_cfg.llm_batch_size))
        labels, splits = [text.label for text, _ in examples], [split for _, split in examples]
        stored = TaskActivations(acts_TD, example_T, labels, splits, {})
        info = {"labels": labels, "splits": splits, "sources": [text.source for text, _ in examples], "ood_shift": data.ood_shift,
                **_baselines(eval_cfg, name, stored)}
        return {"acts_TD": acts_TD, "example_T": example_T}, info

    return as_task_activations(*cached_artifact(cache_root(cfg), artifact_key("task", payload), build))


def _sequences_payload(cfg: DictConfig, sequences_NS: torch.Tensor) -> dict[str, Any]:
    fingerprint = hashlib.blake2b(sequences_NS.cpu().numpy().tobytes(), digest_size=16).hexdigest()
    return {**_model_payload(cfg), "sequences": fingerprint, "shape": list(sequences_NS.shape)}


def ce_loss_zero(cfg: DictConfig, model: LoadedModel, sequences_NS: torch.Tensor) -> float:
    """The zero-ablation CE of the core eval's sequences at this layer (SAE-independent: computed once, cached)."""

    def build() -> tuple[dict, dict]:
        value = zero_ablation_ce(model, int(cfg.layer), sequences_NS, int(cfg.eval.core.batch_size))
        return {"ce_loss_zero": torch.tensor([value], dtype=torch.float64)}, {}

    tensors, _ = cached_artifact(cache_root(cfg), artifact_key("ce_zero", _sequences_payload(cfg, sequences_NS)), build)
    return float(tensors["ce_loss_zero"][0])


def core_reference(cfg: DictConfig, model: LoadedModel, sequences_NS: torch.Tensor) -> CleanReference | None:
    """The clean model's side of the core eval's splice at this layer (computed once, cached), or None for a model
    whose logits are not a linear map of its last hidden state (then every SAE reruns the clean model)."""
    if model.unembedding is None:
        return None
    payload = {**_sequences_payload(cfg, sequences_NS), "core_reference": CORE_REFERENCE_VERSION}

    def build() -> tuple[dict, dict]:
        return asdict(clean_reference(model, int(cfg.layer), sequences_NS, int(cfg.eval.core.batch_size))), {}

    tensors, _ = cached_artifact(cache_root(cfg), artifact_key("core_reference", payload), build)
    return CleanReference(**tensors)
