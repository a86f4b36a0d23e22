"""Activation source: corpus -> token sequences -> mask -> LLM up to the layer -> activations of non-special positions."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from masksae.masking import MaskSpec, mask_tokens
from masksae.batching import RowsInMemory
from masksae.progress import progress

if TYPE_CHECKING:  # type-only: importing transformers costs seconds, and cache readers need none of it
    from transformers import PreTrainedTokenizerBase

    from masksae.corpora import Document
    from masksae.models import LoadedModel

log = logging.getLogger(__name__)
CACHE_FORMAT_VERSION = 3  # 3: sharded caches


@dataclass(frozen=True)
class ActivationSpec:
    """Everything that determines a set of activations; its hash is the activation key. `dtype` is the stored
    dtype, `model_dtype` the dtype of the LLM forward."""

    model: str
    revision: str | None
    layer: int
    corpus: str
    split: str
    n_tokens: int
    context_length: int
    mask_prob: float
    mask_token_id: int | None
    data_seed: int
    dtype: str
    model_dtype: str = "float32"

    def mask(self) -> MaskSpec:
        return MaskSpec(prob=self.mask_prob, token_id=self.mask_token_id, data_seed=self.data_seed)

    def key(self) -> str:
        payload = json.dumps({"format": CACHE_FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class ActivationSet:
    """Activations of the non-special positions of a set of sequences, and which of them were masked."""

    acts_ND: torch.Tensor
    masked_N: torch.Tensor
    spec: ActivationSpec


def token_sequences(
    documents: Iterable[Document], tokenizer: PreTrainedTokenizerBase, context_length: int, n_sequences: int
) -> torch.Tensor:
    """Documents packed into `n_sequences` rows of `context_length` ids, EOS between documents, BOS first if the model uses one."""
    bos = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    body_length = context_length - len(bos)
    rows: list[list[int]] = []
    pending: list[int] = []
    for document in documents:
        pending.extend(tokenizer.encode(document.text, add_special_tokens=False) + separator)
        while len(pending) >= body_length and len(rows) < n_sequences:
            rows.append(bos + pending[:body_length])
            pending = pending[body_length:]
        if len(rows) == n_sequences:
            return torch.tensor(rows, dtype=torch.long)
    raise ValueError(f"the corpus holds only {len(rows)} sequences of {context_length} tokens, {n_sequences} were asked for")


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    ids = tokenizer("a").input_ids
    return tokenizer.bos_token_id is not None and len(ids) > 0 and ids[0] == tokenizer.bos_token_id


def special_positions(input_ids_BS: torch.Tensor, special_ids: torch.Tensor) -> torch.Tensor:
    """Bool map of BOS/EOS/PAD (and other special-token) positions."""
    return torch.isin(input_ids_BS, special_ids)


def iterate_activations(
    model: LoadedModel, sequences_NS: torch.Tensor, layer: int, mask: MaskSpec, batch_size: int, order_N: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per LLM batch: activations at non-special positions of the masked sequences, and the masked flags there.

    `order_N` visits the sequences in another order (streaming epochs); a sequence's mask depends on its index
    in `sequences_NS` only, so every order sees the same masks."""
    special_ids = model.special_ids()
    order_N = torch.arange(len(sequences_NS)) if order_N is None else order_N
    for indices_B in order_N.split(batch_size):
        ids_BS = sequences_NS[indices_B]
        special_BS = special_positions(ids_BS, special_ids)
        masked_ids_BS, masked_BS = mask_tokens(ids_BS, special_BS, indices_B, mask)
        resid_BSD = model.residual_at(masked_ids_BS, layer).float().cpu()
        keep_BS = ~special_BS
        yield resid_BSD[keep_BS], masked_BS[keep_BS]


def rows_per_sequence(sequences_NS: torch.Tensor, special_ids: torch.Tensor, mask: MaskSpec, train_on_masked: bool) -> torch.Tensor:
    """How many training rows each sequence gives (non-special positions, masked ones only if trained on), without the LLM."""
    special_NS = special_positions(sequences_NS, special_ids)
    if train_on_masked:
        return (~special_NS).sum(1)
    _, masked_NS = mask_tokens(sequences_NS, special_NS, torch.arange(len(sequences_NS)), mask)
    return (~special_NS & ~masked_NS).sum(1)


def activation_chunks(model: LoadedModel, sequences_NS: torch.Tensor, spec: ActivationSpec, batch_size: int,
                      first_sequence: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Per LLM batch from `first_sequence` on: activations (in `spec.dtype`), masked flags, and how many sequences are done."""
    started = time.perf_counter()
    n_batches = math.ceil((len(sequences_NS) - first_sequence) / batch_size)
    order_N = torch.arange(first_sequence, len(sequences_NS))
    batches = iterate_activations(model, sequences_NS, spec.layer, spec.mask(), batch_size, order_N)
    batches = progress(batches, n_batches, f"LLM activations ({spec.split}, p={spec.mask_prob:g})", "batches", log)
    for index, (acts_TD, masked_T) in enumerate(batches):
        yield acts_TD.to(getattr(torch, spec.dtype)), masked_T, min(first_sequence + (index + 1) * batch_size, len(sequences_NS))
    elapsed = time.perf_counter() - started
    log.info("LLM activations: %d sequences in %.0f s (%.0f tok/s)", len(order_N), elapsed, order_N.numel() * sequences_NS.shape[1] / max(elapsed, 1e-9))


def compute_activations(model: LoadedModel, sequences_NS: torch.Tensor, spec: ActivationSpec, batch_size: int) -> ActivationSet:
    """Run the LLM over all sequences (masked as `spec` says) and gather the activations in memory (sets known to be small)."""
    acts, flags = [], []
    for acts_TD, masked_T, _ in activation_chunks(model, sequences_NS, spec, batch_size):
        acts.append(acts_TD)
        flags.append(masked_T)
    return ActivationSet(acts_ND=torch.cat(acts), masked_N=torch.cat(flags), spec=spec)


class SequenceBlocks:
    """Streaming (no cache): each block is one sequence, its training rows recomputed by the LLM whenever it is read."""

    def __init__(self, model: LoadedModel, sequences_NS: torch.Tensor, spec: ActivationSpec, batch_size: int, *, train_on_masked: bool) -> None:
        self.model = model
        self.sequences_NS = sequences_NS
        self.spec = spec
        self.batch_size = batch_size
        self.train_on_masked = train_on_masked
        self.rows_per_block_K = rows_per_sequence(sequences_NS, model.special_ids(), spec.mask(), train_on_masked)

    def read(self, blocks_K: torch.Tensor, skip: int, take: int) -> RowsInMemory:
        """The LLM over these sequences (only them), their rows in sequence order, cut to [skip, skip + take)."""
        rows = []
        for acts_TD, masked_T in iterate_activations(self.model, self.sequences_NS, self.spec.layer, self.spec.mask(), self.batch_size, blocks_K):
            rows.append((acts_TD if self.train_on_masked else acts_TD[~masked_T]).to(getattr(torch, self.spec.dtype)))
        rows_RD = torch.cat(rows) if rows else torch.empty(0, self.model.d_model, dtype=getattr(torch, self.spec.dtype))
        return RowsInMemory(rows_RD[skip : skip + take])
