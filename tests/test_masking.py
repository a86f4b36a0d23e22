"""Masking semantics: rate within binomial bounds, special tokens untouched, determinism, p = 0 identity, mask token checks."""

from __future__ import annotations

import math

import pytest
import torch

from masksae.errors import ConfigError
from masksae.masking import MaskSpec, mask_tokens, resolve_mask_token_id, validate_mask_prob

MASK_ID = 4


def _batch(n_seq: int = 64, length: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids_BS = torch.randint(10, 1000, (n_seq, length), generator=torch.Generator().manual_seed(1))
    ids_BS[:, 0] = 2  # BOS
    ids_BS[:, 50] = 1  # an EOS between documents
    special_BS = (ids_BS == 2) | (ids_BS == 1)
    return ids_BS, special_BS, torch.arange(n_seq)


@pytest.mark.parametrize("prob", [0.05, 0.1, 0.2, 0.5])
def test_mask_rate_within_binomial_bounds(prob: float) -> None:
    ids_BS, special_BS, indices_B = _batch()
    _, masked_BS = mask_tokens(ids_BS, special_BS, indices_B, MaskSpec(prob, MASK_ID, data_seed=0))
    n = int((~special_BS).sum())
    observed = int(masked_BS.sum())
    bound = 4.5 * math.sqrt(n * prob * (1 - prob))  # ~1e-5 two-sided
    assert abs(observed - n * prob) < bound, (observed, n * prob, bound)


def test_special_tokens_never_masked_and_masked_positions_hold_the_mask_id() -> None:
    ids_BS, special_BS, indices_B = _batch()
    masked_ids_BS, masked_BS = mask_tokens(ids_BS, special_BS, indices_B, MaskSpec(0.9, MASK_ID, data_seed=3))
    assert torch.equal(masked_ids_BS[special_BS], ids_BS[special_BS])
    assert not masked_BS[special_BS].any()
    assert (masked_ids_BS[masked_BS] == MASK_ID).all()
    assert torch.equal(masked_ids_BS[~masked_BS], ids_BS[~masked_BS])


def test_mask_depends_only_on_data_seed_and_sequence_index() -> None:
    ids_BS, special_BS, indices_B = _batch()
    spec = MaskSpec(0.2, MASK_ID, data_seed=7)
    _, whole_BS = mask_tokens(ids_BS, special_BS, indices_B, spec)
    _, again_BS = mask_tokens(ids_BS, special_BS, indices_B, spec)
    _, tail_BS = mask_tokens(ids_BS[40:], special_BS[40:], indices_B[40:], spec)  # another batch layout
    _, other_seed_BS = mask_tokens(ids_BS, special_BS, indices_B, MaskSpec(0.2, MASK_ID, data_seed=8))
    assert torch.equal(whole_BS, again_BS)
    assert torch.equal(whole_BS[40:], tail_BS)
    assert not torch.equal(whole_BS, other_seed_BS)


def test_zero_probability_is_identity() -> None:
    ids_BS, special_BS, indices_B = _batch()
    masked_ids_BS, masked_BS = mask_tokens(ids_BS, special_BS, indices_B, MaskSpec(0.0, MASK_ID, data_seed=0))
    assert torch.equal(masked_ids_BS, ids_BS)
    assert not masked_BS.any()


def test_masks_are_nested_across_rates() -> None:
    ids_BS, special_BS, indices_B = _batch()
    _, low_BS = mask_tokens(ids_BS, special_BS, indices_B, MaskSpec(0.05, MASK_ID, data_seed=0))
    _, high_BS = mask_tokens(ids_BS, special_BS, indices_B, MaskSpec(0.2, MASK_ID, data_seed=0))
    assert not (low_BS & ~high_BS).any()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "0.1", True, None])
def test_mask_prob_outside_range_is_rejected(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"mask_prob=.*0 <= mask_prob < 1"):
        validate_mask_prob(bad)


def test_mask_token_resolution_on_the_real_tokenizer(make_cfg) -> None:
    from masksae.resources import tokenizer_for

    tokenizer = tokenizer_for(make_cfg())
    assert resolve_mask_token_id(tokenizer, "<mask>", None) == 4
    assert resolve_mask_token_id(tokenizer, "anything", 17) == 17
    with pytest.raises(ConfigError, match=r"model.mask_token='\[MASK\] here'.*exactly one token.*single-token options: ' mask'"):
        resolve_mask_token_id(tokenizer, "[MASK] here", None)
    with pytest.raises(ConfigError, match=r"model.mask_token_id=999999999"):
        resolve_mask_token_id(tokenizer, None, 999_999_999)
