"""Activation source: corpus -> token sequences -> mask -> LLM up to the layer -> cached activations of non-special positions."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load, save
from transformers import PreTrainedTokenizerBase

from masksae.corpora import Document
from masksae.masking import MaskSpec, mask_tokens
from masksae.locks import exclusive_lock
from masksae.models import LoadedModel

log = logging.getLogger(__name__)
CACHE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ActivationSpec:
    """Everything that determines a set of activations; its hash is the activation key."""

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
    model: LoadedModel, sequences_NS: torch.Tensor, layer: int, mask: MaskSpec, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per LLM batch: activations at non-special positions of the masked sequences, and the masked flags there."""
    special_ids = model.special_ids()
    for start in range(0, len(sequences_NS), batch_size):
        ids_BS = sequences_NS[start : start + batch_size]
        special_BS = special_positions(ids_BS, special_ids)
        indices_B = torch.arange(start, start + len(ids_BS))
        masked_ids_BS, masked_BS = mask_tokens(ids_BS, special_BS, indices_B, mask)
        resid_BSD = model.residual_at(masked_ids_BS, layer).float().cpu()
        keep_BS = ~special_BS
        yield resid_BSD[keep_BS], masked_BS[keep_BS]


def _checksum(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class ActivationCache:
    """One folder per activation key: `acts.safetensors` plus `manifest.json`, written last and checked on read."""

    def __init__(self, root: Path) -> None:
        self.root = root / "activations"

    def folder(self, spec: ActivationSpec) -> Path:
        return self.root / spec.key()

    def load(self, spec: ActivationSpec) -> ActivationSet | None:
        """The cached set, or None when absent, incomplete or corrupt (a corrupt one is removed)."""
        folder = self.folder(spec)
        manifest_path = folder / "manifest.json"
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            data = (folder / "acts.safetensors").read_bytes()  # one read: checksummed, then parsed
            if manifest["spec"] != asdict(spec) or _checksum(data) != manifest["checksum"]:
                raise ValueError("manifest does not match the data")
            tensors = load(data)
            if tensors["acts_ND"].shape[0] != manifest["n_rows"]:
                raise ValueError("row count differs from the manifest")
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
            log.warning("activation cache %s is corrupt (%s): rebuilding it", folder, error)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return ActivationSet(acts_ND=tensors["acts_ND"], masked_N=tensors["masked_N"], spec=spec)

    def store(self, activations: ActivationSet) -> None:
        """Write into a staging folder, then rename it into place: readers never see half a cache."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        data = save({"acts_ND": activations.acts_ND.contiguous(), "masked_N": activations.masked_N.contiguous()})
        (staging / "acts.safetensors").write_bytes(data)
        manifest = {
            "spec": asdict(activations.spec),
            "n_rows": activations.acts_ND.shape[0],
            "checksum": _checksum(data),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        target = self.folder(activations.spec)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)

    def get_or_build(
        self, spec: ActivationSpec, build: Callable[[], ActivationSet]
    ) -> ActivationSet:
        """The cached set for `spec`, built once by `build()` even when several processes ask at once."""
        cached = self.load(spec)
        if cached is not None:
            return cached
        with exclusive_lock(self.root / f".{spec.key()}.lock"):
            cached = self.load(spec)
            if cached is not None:
                return cached
            activations = build()
            self.store(activations)
            return activations


def compute_activations(
    model: LoadedModel, sequences_NS: torch.Tensor, spec: ActivationSpec, batch_size: int
) -> ActivationSet:
    """Run the LLM over all sequences (masked as `spec` says) and gather the activations."""
    mask = MaskSpec(prob=spec.mask_prob, token_id=spec.mask_token_id, data_seed=spec.data_seed)
    started = time.perf_counter()
    acts, flags = [], []
    n_batches = math.ceil(len(sequences_NS) / batch_size)
    for index, (acts_TD, masked_T) in enumerate(iterate_activations(model, sequences_NS, spec.layer, mask, batch_size)):
        acts.append(acts_TD.to(getattr(torch, spec.dtype)))
        flags.append(masked_T)
        if (index + 1) % max(1, n_batches // 10) == 0:
            log.info("LLM activations (%s, p=%g): %d/%d batches, %.0f s", spec.split, spec.mask_prob, index + 1, n_batches, time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    log.info("LLM activations: %d sequences in %.0f s (%.0f tok/s)", len(sequences_NS), elapsed, sequences_NS.numel() / elapsed)
    return ActivationSet(acts_ND=torch.cat(acts), masked_N=torch.cat(flags), spec=spec)
