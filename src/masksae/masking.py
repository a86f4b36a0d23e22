"""Token masking for masked regularization: replace non-special tokens by one fixed mask token with probability p."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from masksae.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_MASK_CANDIDATES = (" mask", "_", " the", "<unk>", "<unused0>", "<mask>", "[MASK]", "<|endoftext|>")


@dataclass(frozen=True)
class MaskSpec:
    """Everything that decides which tokens are replaced and by what."""

    prob: float
    token_id: int | None  # None only where prob is 0: clean text needs no mask token
    data_seed: int


def validate_mask_prob(mask_prob: object) -> float:
    """Return `mask_prob` as a float, or raise if it is not a number in [0, 1)."""
    if isinstance(mask_prob, bool) or not isinstance(mask_prob, (int, float)):
        raise ConfigError("mask_prob", mask_prob, "a number with 0 <= mask_prob < 1")
    if not 0.0 <= float(mask_prob) < 1.0:
        raise ConfigError("mask_prob", mask_prob, "a number with 0 <= mask_prob < 1")
    return float(mask_prob)


def single_token_candidates(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Strings from a short list of usual mask choices that this tokenizer encodes as exactly one id."""
    return [s for s in _MASK_CANDIDATES if len(tokenizer.encode(s, add_special_tokens=False)) == 1]


def resolve_mask_token_id(
    tokenizer: PreTrainedTokenizerBase, mask_token: str | None, mask_token_id: int | None
) -> int:
    """The mask id: an explicit id wins; else the string, encoded as written, must give exactly one id."""
    vocab_size = len(tokenizer)
    if mask_token_id is not None:
        if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, int) or not 0 <= mask_token_id < vocab_size:
            raise ConfigError("model.mask_token_id", mask_token_id, f"an integer token id in [0, {vocab_size})")
        return mask_token_id
    if not isinstance(mask_token, str) or not mask_token:
        raise ConfigError("model.mask_token", mask_token, "a non-empty string that encodes to one token, or set model.mask_token_id")
    ids = tokenizer.encode(mask_token, add_special_tokens=False)
    if len(ids) != 1:
        options = ", ".join(repr(s) for s in single_token_candidates(tokenizer)) or "an explicit model.mask_token_id"
        raise ConfigError(
            "model.mask_token",
            mask_token,
            f"a string that encodes to exactly one token (it gives {len(ids)}: {ids}); single-token options: {options}",
        )
    return ids[0]


def sequence_seed(data_seed: int, sequence_index: int) -> int:
    """A 63-bit seed that depends only on (data_seed, sequence index): independent of batch or job layout."""
    digest = hashlib.blake2b(f"mask:{data_seed}:{sequence_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def mask_tokens(
    input_ids_BS: torch.Tensor,
    special_BS: torch.Tensor,
    sequence_indices_B: torch.Tensor,
    spec: MaskSpec,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked copy of `input_ids_BS` and the bool map of replaced positions; special positions never change."""
    if spec.prob == 0.0:
        return input_ids_BS.clone(), torch.zeros_like(input_ids_BS, dtype=torch.bool)
    uniform_BS = torch.empty(input_ids_BS.shape, dtype=torch.float64)
    for row, sequence_index in enumerate(sequence_indices_B.tolist()):
        generator = torch.Generator().manual_seed(sequence_seed(spec.data_seed, int(sequence_index)))
        uniform_BS[row] = torch.rand(input_ids_BS.shape[1], generator=generator, dtype=torch.float64)
    masked_BS = (uniform_BS.to(input_ids_BS.device) < spec.prob) & ~special_BS
    return torch.where(masked_BS, torch.full_like(input_ids_BS, spec.token_id), input_ids_BS), masked_BS
