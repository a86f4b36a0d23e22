"""LLM activations of labelled task texts: per-token residuals at non-special positions, represented per text by their
mean (SAEBench's sparse probing) or by the last token (sae-probes's OOD probes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from masksae.activations import special_positions
from masksae.models import LoadedModel
from masksae.progress import progress
from masksae.saes import SparseAutoencoder

log = logging.getLogger(__name__)


@dataclass
class TaskActivations:
    """Residuals of every token of every text (non-special positions), which text each token belongs to, labels and splits."""

    acts_TD: torch.Tensor
    example_T: torch.Tensor
    labels: list[str]
    splits: list[str]
    info: dict[str, Any]

    @property
    def n_examples(self) -> int:
        return len(self.labels)

    def pooled_residuals(self) -> torch.Tensor:
        """Mean residual of each text, [N, D]."""
        return segment_mean(self.acts_TD, self.example_T, self.n_examples)

    def last_token_residuals(self) -> torch.Tensor:
        """The residual at each text's last kept token, [N, D] (sae-probes's representation); tokens are stored text by
        text in order."""
        counts_N = torch.bincount(self.example_T, minlength=self.n_examples)
        last_N = (counts_N.cumsum(0) - 1).clamp_min(0)
        return self.acts_TD[last_N].float() * (counts_N > 0)[:, None]  # a text with no kept token: zeros

    def residuals(self, representation: str) -> torch.Tensor:
        """[N, D] text representations: 'last_token' or 'mean' (mean-pooled over tokens)."""
        return self.last_token_residuals() if representation == "last_token" else self.pooled_residuals()


def segment_mean(values_TX: torch.Tensor, example_T: torch.Tensor, n_examples: int) -> torch.Tensor:
    """Mean of the rows of each example, [N, X]."""
    sums_NX = torch.zeros(n_examples, values_TX.shape[1]).index_add_(0, example_T, values_TX.float())
    counts_N = torch.bincount(example_T, minlength=n_examples).clamp_min(1)
    return sums_NX / counts_N[:, None]


@torch.no_grad()
def pooled_latents(sae: SparseAutoencoder, task: TaskActivations, batch_size: int = 1024) -> torch.Tensor:
    """SAE latents encoded per token, then mean-pooled per text, [N, F] (SAEBench's order: encode, then pool)."""
    sums_NF = torch.zeros(task.n_examples, sae.d_sae)
    for acts_BD, example_B in zip(task.acts_TD.split(batch_size), task.example_T.split(batch_size), strict=True):
        sums_NF.index_add_(0, example_B, sae.encode(acts_BD.float()))
    return sums_NF / torch.bincount(task.example_T, minlength=task.n_examples).clamp_min(1)[:, None]


@torch.no_grad()
def latents(sae: SparseAutoencoder, task: TaskActivations, representation: str) -> torch.Tensor:
    """SAE latents of each text, [N, F]: of its last token's residual, or encoded per token and mean-pooled."""
    return sae.encode(task.last_token_residuals()) if representation == "last_token" else pooled_latents(sae, task)


def ids_ending_at_a_word(tokenizer: PreTrainedTokenizerBase, text: str, context_length: int) -> list[int]:
    """Token ids of `text`, at most `context_length`; a longer text is cut at the last whitespace that fits, so it ends
    with a whole word (its last token is what sae-probes's representation reads), not a word's first pieces."""
    encoded = tokenizer(text, truncation=True, max_length=context_length, return_offsets_mapping=True)
    if len(encoded.input_ids) < context_length or len(tokenizer(text).input_ids) <= context_length:
        return list(encoded.input_ids)
    end = max(stop for _, stop in encoded.offset_mapping)
    cut = max(text.rfind(" ", 0, end + 1), text.rfind("\n", 0, end + 1))
    if cut <= 0:  # one long word: keep the truncated tokens
        return list(encoded.input_ids)
    return list(tokenizer(text[:cut].rstrip(), truncation=True, max_length=context_length).input_ids)


@torch.inference_mode()
def compute_task_activations(
    model: LoadedModel, layer: int, texts: list[str], context_length: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token residuals of each text cut to `context_length` tokens at a word's end, and the text index of each token (the
    kept tokens are counted first, so the residuals are written into one tensor: no second copy)."""
    tokenizer, special_ids = model.tokenizer, model.special_ids()
    encoded = [ids_ending_at_a_word(tokenizer, text, context_length) for text in texts]
    keep_N = [~special_positions(torch.tensor(ids, dtype=torch.long), special_ids) for ids in encoded]
    example_T = torch.cat([torch.full((int(keep.sum()),), index) for index, keep in enumerate(keep_N)]) if texts else torch.zeros(0, dtype=torch.long)
    acts_TD = torch.empty(len(example_T), model.d_model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    started, filled = time.perf_counter(), 0
    starts = range(0, len(texts), batch_size)
    for start in progress(starts, len(starts), "task activations", "batches", log):
        batch = encoded[start : start + batch_size]
        width = max(len(ids) for ids in batch)
        ids_BS = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in batch])
        keep_BS = torch.stack([torch.nn.functional.pad(keep, (0, width - len(keep))) for keep in keep_N[start : start + batch_size]])
        kept_KD = model.residual_at(ids_BS, layer)[keep_BS]
        acts_TD[filled : filled + len(kept_KD)] = kept_KD.float().cpu()
        filled += len(kept_KD)
    log.info("task activations: %d texts, %d tokens, %.0f s", len(texts), len(example_T), time.perf_counter() - started)
    return acts_TD, example_T


def as_task_activations(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> TaskActivations:
    """The stored artifact as TaskActivations."""
    return TaskActivations(acts_TD=tensors["acts_TD"], example_T=tensors["example_T"], labels=list(info["labels"]),
                           splits=list(info["splits"]), info=dict(info))
