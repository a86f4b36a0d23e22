"""JumpReLU SAE trained through straight-through estimators of the threshold gradient
(Rajamanoharan et al. 2024; dictionary_learning's jumprelu trainer, SAELens)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, autograd, nn

from masksae.errors import ConfigError
from masksae.saes.base import SparseAutoencoder, TrainStepOutput, check_number, nth_largest, register, sum_squared_error


class JumpReLUWithL0(autograd.Function):
    """f = pre * (pre > threshold) and per-token L0 = sum_F H(pre - threshold) in one pass set, with the
    straight-through threshold gradients of Rajamanoharan et al. (rectangle kernel K of width `bandwidth`):
    df/dthreshold ~ -(threshold / bandwidth) K, dL0/dthreshold ~ -(1 / bandwidth) K, df/dpre = H. With
    `l0_to_pre`, L0's estimator also reaches the pre-activations, dL0/dpre ~ (1 / bandwidth) K (Anthropic, Jan 2025):
    the encoder then answers the sparsity loss too, instead of the thresholds alone."""

    @staticmethod
    def forward(ctx: Any, pre_BF: Tensor, threshold_F: Tensor, bandwidth: float, l0_to_pre: bool) -> tuple[Tensor, Tensor]:
        active_BF = pre_BF > threshold_F
        ctx.save_for_backward(pre_BF, threshold_F, active_BF)
        ctx.bandwidth = bandwidth
        ctx.l0_to_pre = l0_to_pre
        return torch.where(active_BF, pre_BF, 0.0), active_BF.sum(dim=-1).to(pre_BF.dtype)

    @staticmethod
    def backward(ctx: Any, grad_f_BF: Tensor, grad_l0_B: Tensor) -> tuple[Tensor, Tensor, None, None]:
        pre_BF, threshold_F, active_BF = ctx.saved_tensors
        near_BF = (pre_BF - threshold_F).abs_() < ctx.bandwidth / 2  # K((pre - threshold) / bandwidth) != 0
        grad_pre_BF = torch.where(active_BF, grad_f_BF, 0.0)
        if ctx.l0_to_pre:
            grad_pre_BF += near_BF * (grad_l0_B.unsqueeze(-1) / ctx.bandwidth)
        weighted_BF = grad_f_BF * threshold_F
        weighted_BF += grad_l0_B.unsqueeze(-1)
        grad_threshold_F = weighted_BF.masked_fill_(~near_BF, 0.0).sum(dim=0).mul_(-1.0 / ctx.bandwidth)
        return grad_pre_BF, grad_threshold_F, None, None


@register("jumprelu")
class JumpReLUSAE(SparseAutoencoder):
    """f = pre * (pre > threshold) with a learned per-latent `threshold` (kept >= 0).

    Sparsity loss on the STE-differentiable L0: `sparsity_coeff * L0` when `target_l0` is None, else
    `sparsity_coeff * (L0 / target_l0 - 1)^2`; it reaches the encoder as well as the thresholds unless
    `l0_grad_to_encoder` is off (then only the thresholds, as in Rajamanoharan et al. and dictionary_learning). Optional pre-activation loss on dead latents (Anthropic,
    Jan 2025): `pre_act_loss_coeff * sum_dead relu(threshold - pre) * ||W_dec_i||`.
    """

    requires_unit_norm_decoder = True

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        bandwidth: float,
        initial_threshold: float,
        sparsity_coeff: float,
        target_l0: float | None = None,
        pre_act_loss_coeff: float = 0.0,
        l0_grad_to_encoder: bool = True,
    ) -> None:
        super().__init__(d_in, d_sae)
        self.threshold = nn.Parameter(torch.full((d_sae,), float(initial_threshold)))
        self.bandwidth = bandwidth
        self.sparsity_coeff = sparsity_coeff
        self.target_l0 = target_l0
        self.pre_act_loss_coeff = pre_act_loss_coeff
        self.l0_grad_to_encoder = l0_grad_to_encoder

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], d_in: int, d_sae: int) -> None:
        check_number(cfg, "bandwidth", "a number > 0", lambda v: v > 0)
        check_number(cfg, "initial_threshold", "a number >= 0", lambda v: v >= 0)
        check_number(cfg, "sparsity_coeff", "a number >= 0", lambda v: v >= 0)
        check_number(
            cfg,
            "target_l0",
            f"null or a number with 0 < target_l0 <= d_sae ({d_sae})",
            lambda v: 0 < v <= d_sae,
            nullable=True,
        )
        check_number(cfg, "pre_act_loss_coeff", "a number >= 0", lambda v: v >= 0)
        if not isinstance(cfg.get("l0_grad_to_encoder", True), bool):
            raise ConfigError("sae.l0_grad_to_encoder", cfg.get("l0_grad_to_encoder"), "true or false")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], d_in: int, d_sae: int) -> JumpReLUSAE:
        target = cfg.get("target_l0")
        return cls(
            d_in,
            d_sae,
            bandwidth=float(cfg["bandwidth"]),
            initial_threshold=float(cfg["initial_threshold"]),
            sparsity_coeff=float(cfg["sparsity_coeff"]),
            target_l0=None if target is None else float(target),
            pre_act_loss_coeff=float(cfg["pre_act_loss_coeff"]),
            l0_grad_to_encoder=cfg.get("l0_grad_to_encoder", True),
        )

    def encode(self, x_BD: Tensor) -> Tensor:
        pre_BF = self.pre_activations(x_BD)
        return pre_BF * (pre_BF > self.threshold)

    def training_loss(
        self, x_BD: Tensor, *, dead_mask_F: Tensor | None = None, sparsity_scale: float = 1.0
    ) -> TrainStepOutput:
        pre_BF = self.pre_activations(x_BD)
        f_BF, l0_B = JumpReLUWithL0.apply(pre_BF, self.threshold, self.bandwidth, self.l0_grad_to_encoder)
        xhat_BD = self.decode(f_BF)
        l0 = l0_B.mean()
        if self.target_l0 is None:
            sparsity_loss = self.sparsity_coeff * l0
        else:
            sparsity_loss = self.sparsity_coeff * (l0 / self.target_l0 - 1).pow(2)
        sparsity_loss = sparsity_scale * sparsity_loss
        loss = sum_squared_error(x_BD, xhat_BD) + sparsity_loss
        extra = {"sparsity_loss": sparsity_loss}
        if dead_mask_F is not None and self.pre_act_loss_coeff > 0:
            gap_BF = torch.relu(self.threshold - pre_BF) * dead_mask_F
            extra["pre_act_loss"] = self.pre_act_loss_coeff * (gap_BF * self.W_dec.norm(dim=-1)).sum(dim=-1).mean()
            loss = loss + extra["pre_act_loss"]
        return self.dense_output(loss, x_BD, xhat_BD, f_BF, **extra)

    @torch.no_grad()
    def calibrate(self, acts_ND: Tensor, batch_size: int = 1024) -> dict[str, float]:
        """With a target L0: shift every threshold by one common delta so that L0 on the held-out rows `acts_ND` is the
        target. Training holds L0 on the training rows; an SAE trained on masked contexts fires more often on clean
        text (measured at smoke size, mask 0.3: 66 in training, 98 on clean text), and comparisons are made on clean
        text at equal sparsity. L0(delta) = #{pre - threshold > delta} / N, so delta is their (target * N)-th largest."""
        if self.target_l0 is None:
            return {}
        active = 0  # latents above their threshold before the shift: the uncalibrated L0, from the same single pass

        def gaps() -> Iterator[Tensor]:
            nonlocal active
            for x_BD in acts_ND.split(batch_size):
                gap_BF = self.pre_activations(x_BD.to(self.W_enc.device, self.W_enc.dtype)) - self.threshold
                active += int((gap_BF > 0).sum())
                yield gap_BF

        delta = nth_largest(gaps(), round(self.target_l0 * acts_ND.shape[0]))
        self.threshold.add_(delta).clamp_(min=0.0)
        return {"l0_uncalibrated": active / acts_ND.shape[0], "threshold_shift": delta}

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        self.threshold.clamp_(min=0.0)

    @torch.no_grad()
    def init_from_data(self, x_ND: Tensor) -> None:
        """b_dec = geometric median; with a target L0, also set b_enc so that each latent fires on a
        fraction target_l0 / d_sae of the sample (Anthropic's Jan 2025 data-dependent encoder-bias init),
        so the run starts at the target sparsity instead of spending its short budget getting there."""
        super().init_from_data(x_ND)
        if self.target_l0 is None:
            return
        x_ND = x_ND.to(self.W_enc.device, self.W_enc.dtype)
        n_tokens = x_ND.shape[0]
        n_above = min(max(round(n_tokens * self.target_l0 / self.d_sae), 1), n_tokens - 1)
        pre_NF = (x_ND - self.b_dec) @ self.W_enc
        cutoff_F = pre_NF.kthvalue(n_tokens - n_above, dim=0).values
        self.b_enc.copy_(self.threshold - cutoff_F)
