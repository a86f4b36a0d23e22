"""ReLU SAE with an L1 penalty weighted by decoder norms (Anthropic, "April 2024 update")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from masksae.saes.base import SparseAutoencoder, TrainStepOutput, check_number, register, sum_squared_error


@register("relu")
class ReLUSAE(SparseAutoencoder):
    """f = relu(pre); loss = ||x - xhat||^2 + l1_coeff * sum_i f_i ||W_dec_i||.

    The decoder is unconstrained (the penalty is weighted by its row norms); rows start at norm 0.1.
    """

    requires_unit_norm_decoder = False
    decoder_init_norm = 0.1

    def __init__(self, d_in: int, d_sae: int, *, l1_coeff: float) -> None:
        super().__init__(d_in, d_sae)
        self.l1_coeff = l1_coeff

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], d_in: int, d_sae: int) -> None:
        check_number(cfg, "l1_coeff", "a number >= 0", lambda v: v >= 0)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], d_in: int, d_sae: int) -> ReLUSAE:
        return cls(d_in, d_sae, l1_coeff=float(cfg["l1_coeff"]))

    def encode(self, x_BD: Tensor) -> Tensor:
        return torch.relu(self.pre_activations(x_BD))

    def training_loss(
        self, x_BD: Tensor, *, dead_mask_F: Tensor | None = None, sparsity_scale: float = 1.0
    ) -> TrainStepOutput:
        f_BF = self.encode(x_BD)
        xhat_BD = self.decode(f_BF)
        l1 = (f_BF * self.W_dec.norm(dim=-1)).sum(dim=-1).mean()
        sparsity_loss = sparsity_scale * self.l1_coeff * l1
        loss = sum_squared_error(x_BD, xhat_BD) + sparsity_loss
        return self.dense_output(loss, x_BD, xhat_BD, f_BF, l1=l1, sparsity_loss=sparsity_loss)
