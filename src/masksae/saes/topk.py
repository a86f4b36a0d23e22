"""TopK SAE with AuxK and a unit-norm decoder (Gao et al. 2024, openai/sparse_autoencoder)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from masksae.saes.base import (
    SparseAutoencoder,
    TrainStepOutput,
    check_number,
    register,
    sum_squared_error,
)


def scatter_topk(acts_BF: Tensor, k: int) -> Tensor:
    """Keep the k largest entries of each row of acts_BF, zero the rest (differentiable in the kept)."""
    values_BK, indices_BK = acts_BF.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(acts_BF).scatter(-1, indices_BK, values_BK)


def sparse_decode(values_BK: Tensor, indices_BK: Tensor, W_dec_FD: Tensor) -> Tensor:
    """sum_k values[b, k] * W_dec[indices[b, k]] without materialising [B, F]: ~k/F of a dense decode's FLOPs."""
    return F.embedding_bag(indices_BK, W_dec_FD, per_sample_weights=values_BK, mode="sum")


def auxk_loss(
    post_relu_BF: Tensor, residual_BD: Tensor, W_dec_FD: Tensor, dead_mask_F: Tensor, aux_k: int
) -> Tensor:
    """AuxK: reconstruct the (detached) residual from the top aux_k dead latents, normalised by the
    residual's variance as dictionary_learning does. Called only when some latent is dead."""
    dead_acts_BF = torch.where(dead_mask_F, post_relu_BF, torch.zeros_like(post_relu_BF))
    values_BK, indices_BK = dead_acts_BF.topk(min(aux_k, dead_acts_BF.shape[-1]), dim=-1, sorted=False)
    aux_recon_BD = sparse_decode(values_BK, indices_BK, W_dec_FD)
    error = sum_squared_error(residual_BD, aux_recon_BD)
    variance = sum_squared_error(residual_BD, residual_BD.mean(dim=0, keepdim=True))
    return (error / variance).nan_to_num(0.0)


@register("topk")
class TopKSAE(SparseAutoencoder):
    """Exactly k active latents per token: the top k of relu(pre-activations)."""

    requires_unit_norm_decoder = True

    def __init__(
        self, d_in: int, d_sae: int, *, k: int, aux_k: int | None = None, aux_coeff: float = 1 / 32
    ) -> None:
        super().__init__(d_in, d_sae)
        self.k = k
        self.aux_k = d_in // 2 if aux_k is None else aux_k
        self.aux_coeff = aux_coeff

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], d_in: int, d_sae: int) -> None:
        check_number(
            cfg, "k", f"an integer with 1 <= k <= d_sae ({d_sae})", lambda v: 1 <= v <= d_sae, integer=True
        )
        check_number(
            cfg, "aux_k", "null (d_in // 2) or an integer >= 1", lambda v: v >= 1, integer=True, nullable=True
        )
        check_number(cfg, "aux_coeff", "a number >= 0", lambda v: v >= 0)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], d_in: int, d_sae: int) -> TopKSAE:
        return cls(d_in, d_sae, **cls.topk_kwargs(cfg))

    @staticmethod
    def topk_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments shared by the TopK family."""
        return {"k": cfg["k"], "aux_k": cfg.get("aux_k"), "aux_coeff": float(cfg["aux_coeff"])}

    def encode(self, x_BD: Tensor) -> Tensor:
        return scatter_topk(torch.relu(self.pre_activations(x_BD)), self.k)

    def train_forward(self, x_BD: Tensor, post_relu_BF: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction loss, xhat_BD, f_BF): decode only the k active latents per token; f_BF (for
        dead-latent tracking and metrics) carries no gradient."""
        values_BK, indices_BK = post_relu_BF.topk(self.k, dim=-1, sorted=False)
        xhat_BD = sparse_decode(values_BK, indices_BK, self.W_dec) + self.b_dec
        with torch.no_grad():
            f_BF = torch.zeros_like(post_relu_BF).scatter(-1, indices_BK, values_BK)
        return sum_squared_error(x_BD, xhat_BD), xhat_BD, f_BF

    def extra_metrics(self) -> dict[str, Tensor]:
        """Architecture-specific detached scalars to log."""
        return {}

    def training_loss(
        self, x_BD: Tensor, *, dead_mask_F: Tensor | None = None, sparsity_scale: float = 1.0
    ) -> TrainStepOutput:
        post_relu_BF = torch.relu(self.pre_activations(x_BD))
        recon_loss, xhat_BD, f_BF = self.train_forward(x_BD, post_relu_BF)
        if dead_mask_F is None or not bool(dead_mask_F.any()):  # one host sync saves a whole AuxK pass
            aux = torch.zeros((), device=x_BD.device)
        else:
            aux = auxk_loss(post_relu_BF, (x_BD - xhat_BD).detach(), self.W_dec, dead_mask_F, self.aux_k)
        loss = recon_loss + self.aux_coeff * aux
        metrics = {
            **self.common_metrics(x_BD, xhat_BD, f_BF),
            "aux_loss": aux.detach(),
            **self.extra_metrics(),
        }
        return TrainStepOutput(loss=loss, xhat_BD=xhat_BD, f_BF=f_BF, metrics=metrics)
