"""LightningModule that trains one SAE: optimiser and schedules, dead-latent tracking, train/ and val/ metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from masksae.evals.core import ReconstructionStats
from masksae.saes import SparseAutoencoder


def lr_factor(step: int, total_steps: int, warmup_steps: int, decay_fraction: float) -> float:
    """Linear warm-up, constant, then linear decay to zero over the last `decay_fraction` of training."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_start = int(total_steps * (1.0 - decay_fraction))
    if decay_fraction > 0 and step >= decay_start:
        return max(0.0, (total_steps - step) / max(1, total_steps - decay_start))
    return 1.0


class SAETrainingModule(L.LightningModule):
    """One SAE on normalised activations; the training loop of every architecture in the registry."""

    def __init__(self, sae: SparseAutoencoder, sae_cfg: Mapping[str, Any], training_cfg: Mapping[str, Any], total_steps: int) -> None:
        super().__init__()
        self.sae = sae
        self.lr = float(sae_cfg["lr"])
        self.adam_betas = tuple(float(b) for b in sae_cfg["adam_betas"])
        self.adam_eps = float(sae_cfg["adam_eps"])
        self.total_steps = total_steps
        self.warmup_steps = max(1, int(training_cfg["lr_warmup_steps"]))
        self.decay_fraction = float(training_cfg["lr_decay_fraction"])
        self.sparsity_warmup_steps = int(training_cfg["sparsity_warmup_fraction"] * total_steps)
        self.dead_after_tokens = int(training_cfg["dead_after_tokens"])
        self.register_buffer("tokens_since_fired_F", torch.zeros(sae.d_sae, dtype=torch.long))
        self._val_stats = ReconstructionStats(sae.d_in, sae.d_sae)
        # Whether some latent was dead at the previous step, copied to the host without waiting: the SAE gets the
        # dead mask (and runs AuxK / the pre-activation loss) only then, and no step blocks on the device.
        self._any_dead_host = torch.zeros((), dtype=torch.bool, pin_memory=torch.cuda.is_available())
        self._training_loss = torch.compile(sae.training_loss) if training_cfg.get("compile", False) else sae.training_loss

    def _sparsity_scale(self) -> float:
        if self.sparsity_warmup_steps <= 0:
            return 1.0
        return min(1.0, (self.global_step + 1) / self.sparsity_warmup_steps)

    def training_step(self, x_BD: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """No host sync: every logged value stays a device tensor (Lightning reads them every log_every_n_steps)."""
        dead_mask_F = self.tokens_since_fired_F >= self.dead_after_tokens
        some_dead_before = bool(self._any_dead_host)
        output = self._training_loss(x_BD, dead_mask_F=dead_mask_F if some_dead_before else None,
                                     sparsity_scale=self._sparsity_scale())
        with torch.no_grad():
            self.tokens_since_fired_F.add_(x_BD.shape[0]).masked_fill_(output.fired_F, 0)
            self._any_dead_host.copy_(dead_mask_F.any(), non_blocking=True)
            metrics = {f"train/{name}": value.detach() for name, value in output.metrics.items()}
            metrics["train/loss"] = output.loss.detach()
            metrics["train/dead_frac"] = dead_mask_F.float().mean()
        self.log_dict({**metrics, "train/lr": self.optimizers().param_groups[0]["lr"]}, on_step=True, on_epoch=False, prog_bar=False)
        return output.loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.sae.before_optimizer_step()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Inside the step, not in on_train_batch_end: checkpoint callbacks run before the module's hooks, and a
        # checkpoint taken before this projection would resume from other weights than the uninterrupted run.
        self.sae.after_optimizer_step()

    def on_validation_epoch_start(self) -> None:
        self._val_stats = ReconstructionStats(self.sae.d_in, self.sae.d_sae)

    def validation_step(self, x_BD: torch.Tensor, batch_idx: int) -> None:
        f_BF = self.sae.encode(x_BD)
        self._val_stats.update(x_BD, self.sae.decode(f_BF), f_BF)

    def on_validation_epoch_end(self) -> None:
        stats = self._val_stats.compute()
        self.log_dict({f"val/{name}": stats[name] for name in ("mse", "explained_variance", "l0")})

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.sae.parameters(), lr=self.lr, betas=self.adam_betas, eps=self.adam_eps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, self.total_steps, self.warmup_steps, self.decay_fraction)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
