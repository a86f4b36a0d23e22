"""BatchTopK SAE: k * batch latents per batch in training, a learned global threshold at inference
(Bussmann et al. 2024, dictionary_learning's batch_top_k trainer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from masksae.saes.base import TrainStepOutput, check_number, nth_largest, register, sum_squared_error
from masksae.saes.topk import TopKSAE, auxk_loss


def batch_topk(post_relu_BF: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Keep the k * B largest entries of the whole batch; also return the smallest kept positive value
    (0 when none is positive), the batch's estimate of the inference threshold."""
    flat_N = post_relu_BF.flatten()
    values_K, indices_K = flat_N.topk(k * post_relu_BF.shape[0], sorted=False)
    f_BF = torch.zeros_like(flat_N).scatter(-1, indices_K, values_K).view_as(post_relu_BF)
    with torch.no_grad():
        smallest = torch.where(values_K > 0, values_K, torch.full_like(values_K, torch.inf)).amin()
        smallest = torch.where(smallest.isinf(), torch.zeros_like(smallest), smallest)
    return f_BF, smallest


@register("batchtopk")
class BatchTopKSAE(TopKSAE):
    """Training: batch top-k of relu(pre). Inference: relu(pre) where pre > threshold.

    `threshold` [d_sae] (a buffer, every entry equal) is an exponential moving average of each training
    batch's smallest selected activation; negative means not yet estimated, and then encode falls back
    to batch top-k. After training, `calibrate` replaces the average (which still weighs the early batches of a short
    run) by the threshold at which held-out tokens have k active latents on average.
    """

    def __init__(self, d_in: int, d_sae: int, *, threshold_beta: float = 0.99, **topk_kwargs: Any) -> None:
        super().__init__(d_in, d_sae, **topk_kwargs)
        self.threshold_beta = threshold_beta
        self.register_buffer("threshold", torch.full((d_sae,), -1.0))

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], d_in: int, d_sae: int) -> None:
        super().check_config(cfg, d_in, d_sae)
        check_number(cfg, "threshold_beta", "a number in [0, 1)", lambda v: 0 <= v < 1)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], d_in: int, d_sae: int) -> BatchTopKSAE:
        return cls(d_in, d_sae, threshold_beta=float(cfg["threshold_beta"]), **cls.topk_kwargs(cfg))

    @property
    def threshold_estimated(self) -> bool:
        return bool(self.threshold[0] >= 0)

    def encode(self, x_BD: Tensor) -> Tensor:
        post_relu_BF = torch.relu(self.pre_activations(x_BD))
        if not self.threshold_estimated:
            return batch_topk(post_relu_BF, self.k)[0]
        return post_relu_BF * (post_relu_BF > self.threshold)

    def training_loss(
        self, x_BD: Tensor, *, dead_mask_F: Tensor | None = None, sparsity_scale: float = 1.0
    ) -> TrainStepOutput:
        """Dense path: the number of active latents varies per token, so f_BF is materialised and decoded."""
        post_relu_BF = torch.relu(self.pre_activations(x_BD))
        f_BF, smallest = batch_topk(post_relu_BF, self.k)
        self.update_threshold(smallest)
        loss, xhat_BD = self.reconstruct(x_BD, f_BF)
        aux = torch.zeros((), device=x_BD.device)
        if dead_mask_F is not None and self.aux_coeff > 0:
            aux = auxk_loss(post_relu_BF, (x_BD - xhat_BD).detach(), self.W_dec, dead_mask_F, self.aux_k) * dead_mask_F.any()
            loss = loss + self.aux_coeff * aux
        return self.dense_output(loss, x_BD, xhat_BD, f_BF, aux_loss=aux, **self.extra_metrics())

    def reconstruct(self, x_BD: Tensor, f_BF: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction loss, xhat_BD) for the training latents."""
        xhat_BD = self.decode(f_BF)
        return sum_squared_error(x_BD, xhat_BD), xhat_BD

    @torch.no_grad()
    def calibrate(self, acts_ND: Tensor, batch_size: int = 1024) -> dict[str, float]:
        """Threshold = the (k * N)-th largest relu pre-activation over the N held-out rows `acts_ND` (the space the SAE
        acts on), so that inference L0 is k on them."""
        chunks = (torch.relu(self.pre_activations(x_BD.to(self.W_enc.device, self.W_enc.dtype))) for x_BD in acts_ND.split(batch_size))
        before = float(self.threshold[0])
        self.threshold.fill_(nth_largest(chunks, self.k * acts_ND.shape[0]))
        return {"threshold_ema": before, "threshold": float(self.threshold[0])}

    @torch.no_grad()
    def update_threshold(self, smallest: Tensor) -> None:
        """EMA of the batch estimates; the first estimate is taken as is. No host sync."""
        beta = self.threshold_beta
        ema = beta * self.threshold + (1 - beta) * smallest
        self.threshold.copy_(torch.where(self.threshold < 0, smallest.expand_as(ema), ema))

    def extra_metrics(self) -> dict[str, Tensor]:
        return {"threshold": self.threshold[0].detach().clone()}
