"""Shared SAE machinery: the base module, the architecture registry, config checks and build."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from masksae.errors import ConfigError

SAE_REGISTRY: dict[str, type[SparseAutoencoder]] = {}


@dataclass
class TrainStepOutput:
    """What one training forward pass returns: the loss to minimise, which latents fired (dead-latent tracking)
    and the detached scalars the loop logs. `f_BF` is left None by sparse paths that never build it."""

    loss: Tensor
    xhat_BD: Tensor
    fired_F: Tensor
    f_BF: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


def register(name: str) -> Callable[[type[SparseAutoencoder]], type[SparseAutoencoder]]:
    """Class decorator: add an SAE class to `SAE_REGISTRY` under `name` (its `architecture`)."""

    def decorate(cls: type[SparseAutoencoder]) -> type[SparseAutoencoder]:
        if name in SAE_REGISTRY:
            raise ValueError(f"SAE architecture {name!r} registered twice")
        cls.architecture = name
        SAE_REGISTRY[name] = cls
        return cls

    return decorate


def check_number(
    cfg: Mapping[str, Any],
    key: str,
    allowed: str,
    ok: Callable[[float], bool],
    *,
    integer: bool = False,
    nullable: bool = False,
) -> Any:
    """Return `cfg[key]` if it is a finite number (an int where `integer`) passing `ok`, else raise
    ConfigError.

    A missing key reads as None, which passes only where `nullable`.
    """
    value = cfg.get(key)
    if value is None and nullable:
        return None
    kinds = (int,) if integer else (int, float)
    is_number = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or not ok(value):
        raise ConfigError(f"sae.{key}", value, allowed)
    return value


def check_number_list(
    cfg: Mapping[str, Any], key: str, allowed: str, ok: Callable[[list[float]], bool]
) -> list[float]:
    """Return `cfg[key]` as a list of floats if it is a list of numbers passing `ok`, else raise."""
    value = cfg.get(key)
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        or not ok([float(v) for v in value])
    ):
        raise ConfigError(f"sae.{key}", value, allowed)
    return [float(v) for v in value]


def resolve_d_sae(cfg: Mapping[str, Any], d_in: int) -> int:
    """The dictionary size: `expansion_factor * d_in` when `expansion_factor` is set (it overrides
    `d_sae`), else `d_sae`."""
    factor = check_number(
        cfg,
        "expansion_factor",
        f"null, or a number > 0 with expansion_factor * d_in (d_in={d_in}) a whole number",
        lambda v: v > 0 and math.isclose(v * d_in, round(v * d_in)) and round(v * d_in) >= 1,
        nullable=True,
    )
    if factor is not None:
        return round(factor * d_in)
    return check_number(cfg, "d_sae", "an integer >= 1", lambda v: v >= 1, integer=True)


def validate_sae_config(cfg: Mapping[str, Any], d_in: int) -> None:
    """Check the `sae` config group before any compute; raise ConfigError naming the first bad key."""
    name = cfg.get("architecture")
    if not isinstance(name, str) or name not in SAE_REGISTRY:
        raise ConfigError("sae.architecture", name, f"one of {', '.join(sorted(SAE_REGISTRY))}")
    d_sae = resolve_d_sae(cfg, d_in)
    check_number(cfg, "lr", "null (2e-4 / sqrt(d_sae / 2^14), as dictionary_learning) or a number > 0", lambda v: v > 0, nullable=True)
    check_number(cfg, "adam_eps", "a number > 0", lambda v: v > 0)
    check_number_list(
        cfg,
        "adam_betas",
        "a list of two numbers in [0, 1)",
        lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
    )
    SAE_REGISTRY[name].check_config(cfg, d_in, d_sae)


def build_sae(cfg: Mapping[str, Any], d_in: int) -> SparseAutoencoder:
    """Validate the `sae` config group, then construct the SAE it names (freshly initialised)."""
    validate_sae_config(cfg, d_in)
    return SAE_REGISTRY[cfg["architecture"]].from_config(cfg, d_in, resolve_d_sae(cfg, d_in))


@torch.no_grad()
def geometric_median(x_ND: Tensor, n_iter: int = 50, eps: float = 1e-8) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the summed Euclidean distance to the rows of x_ND."""
    x_ND = x_ND.float()
    median_D = x_ND.mean(dim=0)
    for _ in range(n_iter):
        weights_N = 1.0 / (x_ND - median_D).norm(dim=-1).clamp_min(eps)
        median_D = (weights_N[:, None] * x_ND).sum(dim=0) / weights_N.sum()
    return median_D


def nth_largest(chunks: Iterable[Tensor], n: int) -> float:
    """The n-th largest value over all chunks' elements, kept exactly with a running top-n (memory: n + one chunk)."""
    kept_K: Tensor | None = None
    for values in chunks:
        candidates_N = values.flatten() if kept_K is None else torch.cat([kept_K, values.flatten()])
        kept_K = candidates_N.topk(min(n, len(candidates_N)), sorted=False).values
    if kept_K is None or len(kept_K) < n:
        raise ValueError(f"nth_largest: fewer than {n} values")
    return float(kept_K.min())


def sum_squared_error(x_BD: Tensor, xhat_BD: Tensor) -> Tensor:
    """Squared L2 reconstruction error summed over dimensions, averaged over tokens."""
    return (x_BD - xhat_BD).pow(2).sum(dim=-1).mean()


class SparseAutoencoder(nn.Module):
    """Base SAE: f = act((x - b_dec) @ W_enc + b_enc), xhat = f @ W_dec + b_dec (SAELens layout)."""

    architecture: ClassVar[str] = ""
    requires_unit_norm_decoder: ClassVar[bool] = True
    decoder_init_norm: ClassVar[float] = 1.0

    def __init__(self, d_in: int, d_sae: int) -> None:
        super().__init__()
        self.d_in = d_in
        self.d_sae = d_sae
        W_dec_FD = torch.randn(d_sae, d_in)
        W_dec_FD *= self.decoder_init_norm / W_dec_FD.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec_FD)
        self.W_enc = nn.Parameter(W_dec_FD.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    # --- config -------------------------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], d_in: int, d_sae: int) -> None:
        """Check the architecture's own keys (the common ones are checked by validate_sae_config)."""

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], d_in: int, d_sae: int) -> SparseAutoencoder:
        """Construct from a validated `sae` config group."""
        raise NotImplementedError

    # --- forward ------------------------------------------------------------------------------
    def pre_activations(self, x_BD: Tensor) -> Tensor:
        """Encoder pre-activations (before the sparsifying nonlinearity), [B, F]: (x - b_dec) @ W_enc + b_enc,
        computed as x @ W_enc + (b_enc - b_dec @ W_enc), so b_dec's gradient is a vector-matrix product rather
        than a [B, F] x [F, D] matmul, and the bias is added inside the matmul. Leading dims beyond B are allowed."""
        pre_NF = torch.addmm(self.b_enc - self.b_dec @ self.W_enc, x_BD.reshape(-1, self.d_in), self.W_enc)
        return pre_NF.view(*x_BD.shape[:-1], self.d_sae)

    def encode(self, x_BD: Tensor) -> Tensor:
        """Inference-time latent activations, [B, F]."""
        raise NotImplementedError

    def decode(self, f_BF: Tensor) -> Tensor:
        return torch.addmm(self.b_dec, f_BF.reshape(-1, self.d_sae), self.W_dec).view(*f_BF.shape[:-1], self.d_in)

    def forward(self, x_BD: Tensor) -> Tensor:
        return self.decode(self.encode(x_BD))

    def training_loss(
        self, x_BD: Tensor, *, dead_mask_F: Tensor | None = None, sparsity_scale: float = 1.0
    ) -> TrainStepOutput:
        """Training forward pass: loss, reconstruction, training-time latents and scalar metrics."""
        raise NotImplementedError

    @staticmethod
    def common_metrics(x_BD: Tensor, xhat_BD: Tensor, l0: Tensor) -> dict[str, Tensor]:
        """Detached metrics every architecture logs: summed-over-d error, per-element MSE, L0 (given)."""
        with torch.no_grad():
            return {
                "recon_loss": sum_squared_error(x_BD, xhat_BD),
                "mse": (x_BD - xhat_BD).pow(2).mean(),
                "l0": l0.detach().float(),
            }

    @staticmethod
    def dense_output(loss: Tensor, x_BD: Tensor, xhat_BD: Tensor, f_BF: Tensor, **extra: Tensor) -> TrainStepOutput:
        """The step output of an architecture that materialises f_BF: L0 and fired latents read from it."""
        with torch.no_grad():
            active_BF = f_BF > 0
            l0 = active_BF.sum(dim=-1, dtype=x_BD.dtype).mean()
            fired_F = active_BF.any(dim=0)
        metrics = {**SparseAutoencoder.common_metrics(x_BD, xhat_BD, l0), **{name: v.detach() for name, v in extra.items()}}
        return TrainStepOutput(loss=loss, xhat_BD=xhat_BD, fired_F=fired_F, f_BF=f_BF, metrics=metrics)

    # --- optimisation hooks -------------------------------------------------------------------
    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """For unit-norm decoders: drop the gradient component along each decoder row."""
        if not self.requires_unit_norm_decoder or self.W_dec.grad is None:
            return
        unit_FD = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        grad_FD = self.W_dec.grad
        grad_FD -= (grad_FD * unit_FD).sum(dim=-1, keepdim=True) * unit_FD

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """For unit-norm decoders: project the decoder rows back to unit norm."""
        if self.requires_unit_norm_decoder:
            self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    # --- initialisation and export --------------------------------------------------------------
    @torch.no_grad()
    def init_from_data(self, x_ND: Tensor) -> None:
        """Data-dependent init: b_dec = geometric median of a sample (openai, dictionary_learning)."""
        self.b_dec.copy_(geometric_median(x_ND.to(self.b_dec.device)))

    @torch.no_grad()
    def calibrate(self, acts_ND: Tensor) -> dict[str, float]:
        """Set inference-only parameters from held-out activations after training (none by default); returns what it set."""
        return {}

    @torch.no_grad()
    def fold_activation_scale(self, scale: float) -> None:
        """The SAE was trained on x * scale: rewrite it in place to act on raw x and return raw xhat, with unit-norm
        decoder rows (what SAELens's and SAEBench's tools assume: a latent's activation is its contribution's norm).

        Latents become f / s: pre-activations (x - b_dec/s) @ W_enc + b_enc/s = ((s x - b_dec) @ W_enc + b_enc) / s, so
        b_enc, b_dec and any thresholds are divided by s (a common factor: every top-k and threshold choice is kept) and
        the decoder is unchanged. Decoder rows that are not unit-norm already (the ReLU SAE, whose penalty weighs them)
        are then normalised latent by latent, their encoder column, b_enc and threshold multiplied by the row's norm
        (exact for per-latent activations: relu and thresholds commute with a positive factor).
        """
        self.b_enc /= scale
        self.b_dec /= scale
        threshold = getattr(self, "threshold", None)
        if isinstance(threshold, Tensor):
            threshold /= scale
        if not self.requires_unit_norm_decoder:
            norms_F = self.W_dec.norm(dim=-1).clamp_min(1e-12)
            self.W_dec /= norms_F.unsqueeze(-1)
            self.W_enc *= norms_F
            self.b_enc *= norms_F
