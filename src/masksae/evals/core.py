"""Core evaluation: reconstruction (MSE, L0, dead latents, explained variance) and CE loss / KL with the SAE spliced in."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from masksae.activations import special_positions
from masksae.models import LoadedModel
from masksae.progress import progress
from masksae.saes import SparseAutoencoder

log = logging.getLogger(__name__)


@dataclass
class ReconstructionStats:
    """Streaming sums over tokens, in float64, for reconstruction metrics."""

    d_in: int
    d_sae: int
    n: float = 0.0
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    l0_sum: float = 0.0
    fired_F: torch.Tensor | None = None

    def update(self, x_BD: torch.Tensor, xhat_BD: torch.Tensor, f_BF: torch.Tensor) -> None:
        x64_BD, r64_BD = x_BD.double(), (x_BD - xhat_BD).double()
        for name, value_D in (("x", x64_BD.sum(0)), ("x2", x64_BD.pow(2).sum(0)), ("r", r64_BD.sum(0)), ("r2", r64_BD.pow(2).sum(0))):
            self.sums[name] = self.sums.get(name, 0) + value_D
        active_BF = f_BF > 0
        self.l0_sum += float(active_BF.sum())
        self.fired_F = active_BF.any(0) if self.fired_F is None else self.fired_F | active_BF.any(0)
        self.n += x_BD.shape[0]

    def compute(self) -> dict[str, float]:
        """mse per element, L0, dead fraction, centered and uncentered explained variance (DESIGN.md formulas)."""
        s, n = self.sums, self.n
        var_x = (s["x2"] - s["x"].pow(2) / n).sum()
        var_r = (s["r2"] - s["r"].pow(2) / n).sum()
        return {
            "mse": float(s["r2"].sum() / (n * self.d_in)),
            "l0": self.l0_sum / n,
            "dead_frac": 1.0 - float(self.fired_F.float().mean()),
            "explained_variance": float(1 - var_r / var_x),
            "explained_variance_uncentered": float(1 - s["r2"].sum() / s["x2"].sum()),
        }


@torch.no_grad()
def reconstruction_metrics(sae: SparseAutoencoder, acts_ND: torch.Tensor, scale: float, batch_size: int = 1024) -> dict[str, float]:
    """Reconstruction metrics of a raw-space SAE on raw activations, MSE reported in normalised units (E||x||^2 = d_in)."""
    stats = ReconstructionStats(sae.d_in, sae.d_sae)
    for x_BD in acts_ND.split(batch_size):
        x_BD = x_BD.float()
        f_BF = sae.encode(x_BD)
        stats.update(x_BD * scale, sae.decode(f_BF) * scale, f_BF)
    return stats.compute()


def _non_special_targets(model: LoadedModel, ids_BS: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, S, 1] positions whose residual is replaced (non-special) and [B, S-1] next-token targets that count."""
    keep_BS1 = (~special_positions(ids_BS, model.special_ids().to(ids_BS.device))).unsqueeze(-1)
    return keep_BS1, keep_BS1[:, 1:, 0]


@torch.no_grad()
def zero_ablation_ce(model: LoadedModel, layer: int, sequences_NS: torch.Tensor, batch_size: int) -> float:
    """Mean next-token CE with the layer's residual zeroed at non-special positions: the same for every SAE."""
    total, count = 0.0, 0
    for ids_BS in sequences_NS.split(batch_size):
        ids_BS = ids_BS.to(model.device)
        keep_BS1, target_BT = _non_special_targets(model, ids_BS)
        with model.replaced_residual(layer, lambda resid_BSD: torch.where(keep_BS1, torch.zeros_like(resid_BSD), resid_BSD)):
            zero_BSV = model.model(input_ids=ids_BS, use_cache=False).logits
        total += _ce_sum(zero_BSV, ids_BS, target_BT)
        count += int(target_BT.sum())
    return total / count


LOSS_CHUNK_POSITIONS = 32  # positions whose full-vocabulary log-probabilities exist at once


def _log_probs(logits_BSV: torch.Tensor, ids_BS: torch.Tensor, target_BT: torch.Tensor,
               dtype: torch.dtype = torch.float32) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Over the counted positions, a few at a time: next-token log-probabilities [C, vocab] in `dtype` and the next
    tokens [C, 1] (never a [batch, S, vocab] float copy)."""
    logits_TV, next_T = logits_BSV[:, :-1][target_BT], ids_BS[:, 1:][target_BT]
    for start in range(0, len(next_T), LOSS_CHUNK_POSITIONS):
        yield logits_TV[start : start + LOSS_CHUNK_POSITIONS].to(dtype).log_softmax(-1), next_T[start : start + LOSS_CHUNK_POSITIONS].unsqueeze(1)


def _ce_sum(logits_BSV: torch.Tensor, ids_BS: torch.Tensor, target_BT: torch.Tensor) -> float:
    return -sum(float(logp_CV.gather(1, next_C1).sum()) for logp_CV, next_C1 in _log_probs(logits_BSV, ids_BS, target_BT))


def _chunked_losses(clean_BSV: torch.Tensor, sae_BSV: torch.Tensor, ids_BS: torch.Tensor, target_BT: torch.Tensor) -> tuple[float, float, float]:
    """Summed next-token CE (clean, SAE) and KL(clean || SAE) over the counted positions."""
    clean_ce = sae_ce = kl = 0.0
    pairs = zip(_log_probs(clean_BSV, ids_BS, target_BT), _log_probs(sae_BSV, ids_BS, target_BT), strict=True)
    for (clean_logp_CV, next_C1), (sae_logp_CV, _) in pairs:
        clean_ce -= float(clean_logp_CV.gather(1, next_C1).sum())
        sae_ce -= float(sae_logp_CV.gather(1, next_C1).sum())
        kl += float((clean_logp_CV.exp() * (clean_logp_CV - sae_logp_CV)).sum())
    return clean_ce, sae_ce, kl


def _ce_summary(clean_ce_sum: float, sae_ce_sum: float, kl_sum: float, count: int, ce_loss_zero: float) -> dict[str, float]:
    clean, spliced, zero = clean_ce_sum / count, sae_ce_sum / count, ce_loss_zero
    return {
        "ce_loss_clean": clean,
        "ce_loss_sae": spliced,
        "ce_loss_zero": zero,
        "ce_loss_recovered": (zero - spliced) / (zero - clean),
        "kl_div": kl_sum / count,
    }


@torch.no_grad()
def ce_metrics(model: LoadedModel, sae: SparseAutoencoder, layer: int, sequences_NS: torch.Tensor, batch_size: int,
               ce_loss_zero: float) -> dict[str, float]:
    """CE loss clean / SAE-spliced at non-special positions, CE loss recovered against the zero-ablation CE, and
    KL(clean || SAE), from a clean and a spliced forward of every sequence (any LM head). Memory: two
    [batch_size, S, vocab] logits and a few positions' log-probabilities."""
    totals = {"clean": 0.0, "sae": 0.0, "kl": 0.0}
    count = 0
    batches = sequences_NS.split(batch_size)
    for ids_BS in progress(batches, len(batches), "core eval: CE with the SAE spliced in", "batches", log):
        ids_BS = ids_BS.to(model.device)
        keep_BS1, target_BT = _non_special_targets(model, ids_BS)

        def with_sae(resid_BSD: torch.Tensor) -> torch.Tensor:
            xhat_BSD = sae(resid_BSD.float()).to(resid_BSD.dtype)
            return torch.where(keep_BS1, xhat_BSD, resid_BSD)

        clean_BSV = model.model(input_ids=ids_BS, use_cache=False).logits
        with model.replaced_residual(layer, with_sae):
            sae_BSV = model.model(input_ids=ids_BS, use_cache=False).logits
        clean_ce, sae_ce, kl = _chunked_losses(clean_BSV, sae_BSV, ids_BS, target_BT)
        totals["clean"] += clean_ce
        totals["sae"] += sae_ce
        totals["kl"] += kl
        del clean_BSV, sae_BSV
        count += int(target_BT.sum())
    return _ce_summary(totals["clean"], totals["sae"], totals["kl"], count, ce_loss_zero)


@dataclass
class CleanReference:
    """The clean model's side of the splice, the same for every SAE of a (model, layer, sequences): the residual after
    block `layer` and, per counted position T, the clean next-token CE, the clean distribution's sum_v p log p and its
    expected unembedding sum_v p(v) W_U[v]. With a linear head, KL(clean || SAE) = sum_v p log p + logsumexp(s) - (that
    expectation . h), where s = W_U h are the spliced logits: nothing else of the clean logits is needed."""

    resid_NSD: torch.Tensor
    clean_ce_T: torch.Tensor
    neg_entropy_T: torch.Tensor
    mean_unembed_TD: torch.Tensor


@torch.no_grad()
def clean_reference(model: LoadedModel, layer: int, sequences_NS: torch.Tensor, batch_size: int) -> CleanReference:
    """One clean forward of every sequence (needs `model.unembedding`): what `ce_metrics_from_reference` reuses."""
    unembed_VD = model.unembedding.weight.float()
    resid, ce, neg_entropy, mean_unembed = [], [], [], []
    batches = sequences_NS.split(batch_size)
    for ids_BS in progress(batches, len(batches), "core eval set-up: clean forward", "batches", log):
        ids_BS = ids_BS.to(model.device)
        _, target_BT = _non_special_targets(model, ids_BS)
        captured: dict[str, torch.Tensor] = {}
        with _captured_output(model.blocks[layer], captured):
            logits_BSV = model.model(input_ids=ids_BS, use_cache=False).logits
        resid.append(captured["output"].cpu())
        # float64: sum_v p log p over the vocabulary drifts by ~3e-4 in float32, as much as a good SAE's whole KL
        for logp_CV, next_C1 in _log_probs(logits_BSV, ids_BS, target_BT, torch.float64):
            p_CV = logp_CV.exp()
            ce.append(-logp_CV.gather(1, next_C1)[:, 0].cpu())
            neg_entropy.append((p_CV * logp_CV).sum(-1).cpu())
            mean_unembed.append((p_CV.float() @ unembed_VD).cpu())
    return CleanReference(torch.cat(resid), torch.cat(ce), torch.cat(neg_entropy), torch.cat(mean_unembed))


@contextlib.contextmanager
def _captured_output(module: nn.Module, captured: dict[str, torch.Tensor], of_input: bool = False) -> Iterator[None]:
    """Within the block, captured["output"] is the module's last output (or its first input)."""

    def capture(_module: nn.Module, inputs: Any, output: Any) -> None:
        captured["output"] = inputs[0] if of_input else output[0] if isinstance(output, tuple) else output

    handle = module.register_forward_hook(capture)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def ce_metrics_from_reference(model: LoadedModel, sae: SparseAutoencoder, layer: int, sequences_NS: torch.Tensor, batch_size: int,
                              reference: CleanReference, ce_loss_zero: float) -> dict[str, float]:
    """The metrics of `ce_metrics`, per SAE running only the blocks above the hook on the cached residual with the SAE
    spliced in, and the head: no clean forward (`clean_reference` holds its part; needs `model.unembedding`)."""
    sae_ce = kl = 0.0
    offset = 0
    for start in progress(range(0, len(sequences_NS), batch_size), -(-len(sequences_NS) // batch_size),
                          "core eval: CE with the SAE spliced in", "batches", log):
        ids_BS = sequences_NS[start : start + batch_size].to(model.device)
        keep_BS1, target_BT = _non_special_targets(model, ids_BS)
        resid_BSD = reference.resid_NSD[start : start + batch_size].to(model.device)
        spliced_BSD = torch.where(keep_BS1, sae(resid_BSD.float()).to(resid_BSD.dtype), resid_BSD)
        captured: dict[str, torch.Tensor] = {}
        with model.starting_after(layer, spliced_BSD), _captured_output(model.unembedding, captured, of_input=True):
            logits_BSV = model.model(input_ids=ids_BS, use_cache=False).logits
        logits_TV, hidden_TD = logits_BSV[:, :-1][target_BT], captured["output"][:, :-1][target_BT]
        next_T = ids_BS[:, 1:][target_BT]
        for chunk in range(0, len(next_T), LOSS_CHUNK_POSITIONS):
            rows = slice(chunk, chunk + LOSS_CHUNK_POSITIONS)
            logits_CV = logits_TV[rows].float()
            lse_C = logits_CV.logsumexp(-1)
            sae_ce += float((lse_C - logits_CV.gather(1, next_T[rows, None])[:, 0]).double().sum())
            at = slice(offset + chunk, offset + chunk + len(lse_C))
            expected_logit_C = (reference.mean_unembed_TD[at].double() * hidden_TD[rows].double().cpu()).sum(-1)
            kl += float((reference.neg_entropy_T[at] + lse_C.double().cpu() - expected_logit_C).sum())
        offset += len(next_T)
    return _ce_summary(float(reference.clean_ce_T.sum()), sae_ce, kl, offset, ce_loss_zero)


def evaluate_core(
    model: LoadedModel,
    sae: SparseAutoencoder,
    layer: int,
    val_acts_ND: torch.Tensor,
    ce_sequences_NS: torch.Tensor,
    scale: float,
    batch_size: int,
    ce_loss_zero: float,
    reference: CleanReference | None = None,
) -> dict[str, float]:
    """All `core/*` metrics of a raw-space SAE on clean held-out text (`ce_loss_zero`: zero_ablation_ce of the sequences;
    `reference`: clean_reference of them, where the model has a linear head; without it every SAE reruns the clean model)."""
    metrics = reconstruction_metrics(sae, val_acts_ND, scale)
    if reference is None:
        metrics.update(ce_metrics(model, sae, layer, ce_sequences_NS, batch_size, ce_loss_zero))
    else:
        metrics.update(ce_metrics_from_reference(model, sae, layer, ce_sequences_NS, batch_size, reference, ce_loss_zero))
    return {f"core/{name}": value for name, value in metrics.items()}
