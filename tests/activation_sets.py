"""Test helper: a set of rows written through the real activation cache, as sharded as a large one would be."""

from __future__ import annotations

from pathlib import Path

import torch

from masksae.activation_cache import ActivationCache
from masksae.activations import ActivationSpec
from masksae.shards import ShardedActivations


def sharded_set(root: Path, acts_ND: torch.Tensor, masked_N: torch.Tensor | None = None, *, shard_rows: int, chunk: int) -> ShardedActivations:
    """acts_ND cached under `root` as an LLM pass would write it: chunks of `chunk` rows ('sequences'), shards of ~`shard_rows`."""
    masked_N = torch.zeros(len(acts_ND), dtype=torch.bool) if masked_N is None else masked_N
    spec = ActivationSpec("synthetic", None, 0, "test", "train", len(acts_ND), chunk, 0.0, None, 0, str(acts_ND.dtype).removeprefix("torch."))

    def build(writer) -> None:
        for index, (acts_TD, masked_T) in enumerate(zip(acts_ND.split(chunk), masked_N.split(chunk), strict=True)):
            writer.append(acts_TD, masked_T, index + 1)

    return ActivationCache(root).get_or_build(spec, build, 10**12, d_model=acts_ND.shape[1], shard_rows=shard_rows)
