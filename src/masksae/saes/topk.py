"""TopK SAE with AuxK and a unit-norm decoder (Gao et al. 2024, openai/sparse_autoencoder)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, autograd

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


def auxk_error(values_BA: Tensor, indices_BA: Tensor, residual_BD: Tensor, W_dec_FD: Tensor) -> Tensor:
    """AuxK: how well the selected dead latents reconstruct the (detached) residual, normalised by the residual's
    variance as dictionary_learning does."""
    error = sum_squared_error(residual_BD, sparse_decode(values_BA, indices_BA, W_dec_FD))
    variance = sum_squared_error(residual_BD, residual_BD.mean(dim=0, keepdim=True))
    return (error / variance).nan_to_num(0.0)


def auxk_loss(
    post_relu_BF: Tensor, residual_BD: Tensor, W_dec_FD: Tensor, dead_mask_F: Tensor, aux_k: int
) -> Tensor:
    """AuxK on dense latents: the top aux_k dead latents reconstruct the residual."""
    dead_acts_BF = torch.where(dead_mask_F, post_relu_BF, torch.zeros_like(post_relu_BF))
    values_BA, indices_BA = dead_acts_BF.topk(min(aux_k, dead_acts_BF.shape[-1]), dim=-1, sorted=False)
    return auxk_error(values_BA, indices_BA, residual_BD, W_dec_FD)


class SparseTopKEncoder(autograd.Function):
    """Top-k (and, with a dead mask, top-aux_k dead) latents of relu((x - b_dec) @ W_enc + b_enc).

    The forward needs the dense pre-activations; the gradient flows only through the selected latents, so the
    backward is two embedding_bag passes (~(k + aux_k) / F of the dense backward matmuls) and no [B, F] tensor."""

    @staticmethod
    def forward(ctx: Any, sae_in_BD: Tensor, W_enc_DF: Tensor, b_enc_F: Tensor, k: int, aux_k: int,
                dead_mask_F: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        pre_BF = torch.addmm(b_enc_F, sae_in_BD, W_enc_DF)
        values_BK, indices_BK = pre_BF.topk(k, dim=-1, sorted=False)
        if dead_mask_F is None:
            aux_values_BA, aux_indices_BA = values_BK.new_zeros(len(values_BK), 0), indices_BK.new_zeros(len(values_BK), 0)
        else:
            pre_BF.masked_fill_(~dead_mask_F, -torch.inf)
            aux_values_BA, aux_indices_BA = pre_BF.topk(min(aux_k, pre_BF.shape[-1]), dim=-1, sorted=False)
        values_BK, aux_values_BA = values_BK.relu_(), aux_values_BA.relu_()
        ctx.save_for_backward(sae_in_BD, W_enc_DF, torch.cat([indices_BK, aux_indices_BA], dim=-1),
                              torch.cat([values_BK, aux_values_BA], dim=-1) > 0)
        ctx.mark_non_differentiable(indices_BK, aux_indices_BA)
        return values_BK, indices_BK, aux_values_BA, aux_indices_BA

    @staticmethod
    def backward(ctx: Any, grad_values_BK: Tensor, _: None, grad_aux_BA: Tensor, __: None) -> tuple[Tensor | None, ...]:
        sae_in_BD, W_enc_DF, indices_BS, positive_BS = ctx.saved_tensors
        grad_pre_BS = torch.cat([grad_values_BK, grad_aux_BA], dim=-1) * positive_BS  # relu', zero at -inf fills
        with torch.enable_grad():
            W_enc_FD = W_enc_DF.detach().t().contiguous().requires_grad_()
            grad_sae_in_BD = F.embedding_bag(indices_BS, W_enc_FD, per_sample_weights=grad_pre_BS, mode="sum")
            (grad_W_enc_FD,) = torch.autograd.grad(grad_sae_in_BD, W_enc_FD, grad_outputs=sae_in_BD)
        grad_b_enc_F = torch.zeros_like(W_enc_DF[0]).index_add_(0, indices_BS.flatten(), grad_pre_BS.flatten())
        return grad_sae_in_BD.detach(), grad_W_enc_FD.t(), grad_b_enc_F, None, None, None


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

    def extra_metrics(self) -> dict[str, Tensor]:
        """Architecture-specific detached scalars to log."""
        return {}

    def training_loss(
        self, x_BD: Tensor, *, dead_mask_F: Tensor | None = None, sparsity_scale: float = 1.0
    ) -> TrainStepOutput:
        """Sparse all the way: only the k active latents per token are decoded and receive gradients. AuxK runs
        when the caller passes a dead mask (the loop does so only after a step that had dead latents: no host
        sync), and counts only if some latent is dead."""
        use_aux = dead_mask_F is not None and self.aux_coeff > 0
        values_BK, indices_BK, aux_values_BA, aux_indices_BA = SparseTopKEncoder.apply(
            x_BD - self.b_dec, self.W_enc, self.b_enc, self.k, self.aux_k, dead_mask_F if use_aux else None
        )
        xhat_BD = sparse_decode(values_BK, indices_BK, self.W_dec) + self.b_dec
        loss = sum_squared_error(x_BD, xhat_BD)
        if use_aux:
            aux = auxk_error(aux_values_BA, aux_indices_BA, (x_BD - xhat_BD).detach(), self.W_dec) * dead_mask_F.any()
            loss = loss + self.aux_coeff * aux
        else:
            aux = torch.zeros((), device=x_BD.device)
        with torch.no_grad():
            active_BK = values_BK > 0
            fired_F = torch.zeros(self.d_sae, device=x_BD.device).index_add_(0, indices_BK.flatten(), active_BK.flatten().float()) > 0
            l0 = active_BK.sum(dim=-1, dtype=x_BD.dtype).mean()
        metrics = {**self.common_metrics(x_BD, xhat_BD, l0), "aux_loss": aux.detach(), **self.extra_metrics()}
        return TrainStepOutput(loss=loss, xhat_BD=xhat_BD, fired_F=fired_F, metrics=metrics)
