"""Matryoshka BatchTopK SAE: nested latent prefixes each reconstruct the input
(Bussmann et al. 2025, Nabeshima 2024; dictionary_learning's matryoshka_batch_top_k trainer)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from masksae.saes.base import check_number_list, register, sum_squared_error
from masksae.saes.batchtopk import BatchTopKSAE


def group_sizes(group_fractions: Sequence[float], d_sae: int) -> list[int]:
    """Latents per group: floor(fraction * d_sae) for all but the last group, which takes the rest."""
    sizes = [int(fraction * d_sae) for fraction in group_fractions[:-1]]
    return [*sizes, d_sae - sum(sizes)]


@register("matryoshka_batchtopk")
class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    """BatchTopK whose reconstruction loss is the weighted sum over nested prefixes (groups 0..i).

    Encode, decode and the inference threshold are BatchTopK's; the full reconstruction is the last prefix.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        group_fractions: Sequence[float],
        group_weights: Sequence[float] | None = None,
        **batchtopk_kwargs: Any,
    ) -> None:
        super().__init__(d_in, d_sae, **batchtopk_kwargs)
        self.group_sizes = group_sizes(group_fractions, d_sae)
        n_groups = len(self.group_sizes)
        self.group_weights = [1.0 / n_groups] * n_groups if group_weights is None else list(group_weights)

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], d_in: int, d_sae: int) -> None:
        super().check_config(cfg, d_in, d_sae)
        fractions = check_number_list(
            cfg,
            "group_fractions",
            f"a list of fractions > 0 summing to 1, each group getting >= 1 of d_sae ({d_sae}) latents",
            lambda v: len(v) >= 1
            and all(f > 0 for f in v)
            and math.isclose(sum(v), 1.0, abs_tol=1e-6)
            and min(group_sizes(v, d_sae)) >= 1,
        )
        if cfg.get("group_weights") is not None:
            check_number_list(
                cfg,
                "group_weights",
                f"null (uniform) or {len(fractions)} weights >= 0 (one per group) with a positive sum",
                lambda v: len(v) == len(fractions) and all(w >= 0 for w in v) and sum(v) > 0,
            )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], d_in: int, d_sae: int) -> MatryoshkaBatchTopKSAE:
        weights = cfg.get("group_weights")
        return cls(
            d_in,
            d_sae,
            group_fractions=[float(f) for f in cfg["group_fractions"]],
            group_weights=None if weights is None else [float(w) for w in weights],
            threshold_beta=float(cfg["threshold_beta"]),
            **cls.topk_kwargs(cfg),
        )

    def reconstruct(self, x_BD: Tensor, f_BF: Tensor) -> tuple[Tensor, Tensor]:
        f_chunks = f_BF.split(self.group_sizes, dim=-1)
        W_dec_chunks = self.W_dec.split(self.group_sizes, dim=0)
        xhat_BD = self.b_dec.expand_as(x_BD)
        loss = x_BD.new_zeros(())
        for f_BG, W_dec_GD, weight in zip(f_chunks, W_dec_chunks, self.group_weights, strict=True):
            xhat_BD = xhat_BD + f_BG @ W_dec_GD
            loss = loss + weight * sum_squared_error(x_BD, xhat_BD)
        return loss, xhat_BD
