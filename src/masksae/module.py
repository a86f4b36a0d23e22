"""LightningModule that trains a pack of SAEs on one activation stream: optimiser, schedules, dead latents, metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


class PackMember(torch.nn.Module):
    """One SAE of the pack: its Adam settings, its dead-latent clock and its validation statistics."""

    def __init__(self, sae: SparseAutoencoder, sae_cfg: Mapping[str, Any], compile_loss: bool) -> None:
        super().__init__()
        self.sae = sae
        self.lr = float(sae_cfg["lr"])
        self.adam_betas = tuple(float(b) for b in sae_cfg["adam_betas"])
        self.adam_eps = float(sae_cfg["adam_eps"])
        self.register_buffer("tokens_since_fired_F", torch.zeros(sae.d_sae, dtype=torch.long))
        # Whether some latent was dead at the previous step, copied to the host without waiting: the SAE gets the
        # dead mask (and runs AuxK / the pre-activation loss) only then, and no step blocks on the device.
        self.any_dead_host = torch.zeros((), dtype=torch.bool, pin_memory=torch.cuda.is_available())
        self.training_loss = torch.compile(sae.training_loss) if compile_loss else sae.training_loss
        self.val_stats = ReconstructionStats(sae.d_in, sae.d_sae)

    def step(self, x_BD: torch.Tensor, dead_after_tokens: int, sparsity_scale: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one training batch and its metrics (device tensors: no host sync)."""
        dead_mask_F = self.tokens_since_fired_F >= dead_after_tokens
        output = self.training_loss(x_BD, dead_mask_F=dead_mask_F if bool(self.any_dead_host) else None,
                                    sparsity_scale=sparsity_scale)
        with torch.no_grad():
            self.tokens_since_fired_F.add_(x_BD.shape[0]).masked_fill_(output.fired_F, 0)
            self.any_dead_host.copy_(dead_mask_F.any(), non_blocking=True)
            metrics = {f"train/{name}": value.detach() for name, value in output.metrics.items()}
            metrics["train/loss"] = output.loss.detach()
            metrics["train/dead_frac"] = dead_mask_F.float().mean()
        return output.loss, metrics


class SAETrainingModule(L.LightningModule):
    """Several SAEs (one for an ordinary run) trained side by side on the same normalised batches.

    One Adam with a parameter group per SAE is exactly one Adam per SAE (Adam is per parameter), and keeps
    Lightning's step counting, checkpointing and resume as for a single optimiser. The summed loss gives each SAE
    the gradient of its own loss; gradients are clipped per SAE. Metrics are logged as `<member index>/<name>`.
    """

    def __init__(self, saes: Sequence[SparseAutoencoder], sae_cfgs: Sequence[Mapping[str, Any]], training_cfg: Mapping[str, Any],
                 total_steps: int) -> None:
        super().__init__()
        compile_loss = bool(training_cfg.get("compile", False))
        self.members = torch.nn.ModuleList(PackMember(sae, cfg, compile_loss) for sae, cfg in zip(saes, sae_cfgs, strict=True))
        self.total_steps = total_steps
        self.warmup_steps = max(1, int(training_cfg["lr_warmup_steps"]))
        self.decay_fraction = float(training_cfg["lr_decay_fraction"])
        self.sparsity_warmup_steps = int(training_cfg["sparsity_warmup_fraction"] * total_steps)
        self.dead_after_tokens = int(training_cfg["dead_after_tokens"])
        self.grad_clip = training_cfg.get("grad_clip")

    def _sparsity_scale(self) -> float:
        if self.sparsity_warmup_steps <= 0:
            return 1.0
        return min(1.0, (self.global_step + 1) / self.sparsity_warmup_steps)

    def training_step(self, x_BD: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """No host sync: every logged value stays a device tensor (Lightning reads them every log_every_n_steps)."""
        total_loss = x_BD.new_zeros(())
        logged: dict[str, Any] = {}
        for index, member in enumerate(self.members):
            loss, metrics = member.step(x_BD, self.dead_after_tokens, self._sparsity_scale())
            total_loss = total_loss + loss
            group = self.optimizers().param_groups[index]
            logged.update({f"{index}/{name}": value for name, value in {**metrics, "train/lr": group["lr"]}.items()})
        self.log_dict(logged, on_step=True, on_epoch=False, prog_bar=False)
        return total_loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        for member in self.members:
            member.sae.before_optimizer_step()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(member.sae.parameters(), float(self.grad_clip))

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Inside the step, not in on_train_batch_end: checkpoint callbacks run before the module's hooks, and a
        # checkpoint taken before this projection would resume from other weights than the uninterrupted run.
        for member in self.members:
            member.sae.after_optimizer_step()

    def on_validation_epoch_start(self) -> None:
        for member in self.members:
            member.val_stats = ReconstructionStats(member.sae.d_in, member.sae.d_sae)

    def validation_step(self, x_BD: torch.Tensor, batch_idx: int) -> None:
        for member in self.members:
            f_BF = member.sae.encode(x_BD)
            member.val_stats.update(x_BD, member.sae.decode(f_BF), f_BF)

    def on_validation_epoch_end(self) -> None:
        for index, member in enumerate(self.members):
            stats = member.val_stats.compute()
            self.log_dict({f"{index}/val/{name}": stats[name] for name in ("mse", "explained_variance", "l0")})

    def configure_optimizers(self) -> dict[str, Any]:
        groups = [{"params": list(m.sae.parameters()), "lr": m.lr, "betas": m.adam_betas, "eps": m.adam_eps} for m in self.members]
        optimizer = torch.optim.Adam(groups)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, self.total_steps, self.warmup_steps, self.decay_fraction)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
