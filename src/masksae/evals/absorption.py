"""First-letter feature absorption of one SAE (SAEBench's full-absorption and absorption-fraction scores)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from masksae.evals.spelling import LETTERS, SpellingSetup, as_setup, setup_for_words, train_multi_probe
from masksae.models import LoadedModel
from masksae.saes import SparseAutoencoder

SILENT = 1e-8  # a latent whose activation is below this did not fire (SAEBench's EPS)
# SAEBench 0.6.0 AbsorptionEvalConfig: k_sparse_probe_l1_decay, k_sparse_probe_num_epochs, and train_sparse_multi_probe's
# l2_decay (its k_sparse_probe_batch_size is the setting k_sparse_probe_batch_size).
K_SPARSE_L1, K_SPARSE_EPOCHS, K_SPARSE_L2 = 0.01, 50, 1e-6


@dataclass(frozen=True)
class AbsorptionSettings:
    """Thresholds of the metric (SAEBench defaults)."""

    max_k: int = 10
    f1_jump_threshold: float = 0.03
    min_probe_f1: float = 0.6
    min_letters: int = 20
    full_absorption_cos: float = 0.025
    fraction_cos: float = 0.1
    projection_fraction: float = 0.4
    max_absorbing_latents: int = 3
    k_sparse_probe_batch_size: int = 4096

    @classmethod
    def from_config(cls, abs_cfg: Mapping[str, Any]) -> AbsorptionSettings:
        return cls(**{name: type(default)(abs_cfg[name]) for name, default in asdict(cls()).items()})


@dataclass
class LetterResult:
    """Absorption of one letter's feature."""

    letter: str
    probe_f1: float
    main_latents: list[int]
    n_probe_true_positives: int
    n_full_absorption: int
    full_absorption_rate: float
    mean_absorption_fraction: float
    absorbed: list[dict[str, Any]] = field(default_factory=list)


@torch.no_grad()
def encode_all(sae: SparseAutoencoder, acts_ND: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """SAE latents of every row, [N, F]."""
    return torch.cat([sae.encode(x_BD.float()) for x_BD in acts_ND.split(batch_size)])


def l1_selection_weights(latents_NF: torch.Tensor, letter_N: torch.Tensor, seed: int, batch_size: int) -> torch.Tensor:
    """Weights [26, F] of SAEBench's L1-penalised multi-label probe on raw SAE latents (k_sparse_probing.
    train_sparse_multi_probe: pos_weight BCE + 0.01 * L1, 50 epochs, weight decay 1e-6), by which it ranks latents."""
    y_NL = F.one_hot(letter_N, len(LETTERS)).float()
    W_LF, _ = train_multi_probe(latents_NF.float(), y_NL, seed=seed, epochs=K_SPARSE_EPOCHS, batch_size=batch_size,
                                weight_decay=K_SPARSE_L2, l1=K_SPARSE_L1)
    return W_LF


def main_latents(
    train_NF: torch.Tensor, train_letter_N: torch.Tensor, test_NF: torch.Tensor, test_letter_N: torch.Tensor,
    settings: AbsorptionSettings, seed: int,
) -> dict[int, list[int]]:
    """Per letter, the latents of the largest k-sparse probe whose test F1 kept rising by more than the jump threshold.

    SAEBench's k_sparse_probing: the top-k latents by signed L1-probe weight, a class-balanced scikit-learn logistic
    regression per k on the train words, F1 of its decision > 0 on the test words (add_feature_splits_to_metrics_df).
    """
    weights_LF = l1_selection_weights(train_NF, train_letter_N, seed, settings.k_sparse_probe_batch_size)
    chosen: dict[int, list[int]] = {}
    for letter in range(len(LETTERS)):
        best, y_train, y_test = -np.inf, (train_letter_N == letter).numpy(), (test_letter_N == letter).numpy()
        chosen[letter] = []
        if y_train.all() or not y_train.any():
            continue
        for k in range(1, settings.max_k + 1):
            ids = weights_LF[letter].topk(k).indices.tolist()
            probe = LogisticRegression(max_iter=500, class_weight="balanced").fit(train_NF[:, ids].numpy(), y_train)
            score = f1_score(y_test, probe.decision_function(test_NF[:, ids].numpy()) > 0, zero_division=0.0)
            if score <= best + settings.f1_jump_threshold:
                break
            best, chosen[letter] = score, ids
    return chosen


def word_absorption(
    acts_ND: torch.Tensor, latents_NF: torch.Tensor, W_dec_FD: torch.Tensor, probe_D: torch.Tensor, main_ids: list[int],
    settings: AbsorptionSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per word: full absorption (bool), absorption fraction, top projecting latent and its share of the projection.

    SAEBench's FeatureAbsorptionCalculator.calculate_absorption: a latent's contribution to the probe projection is its
    activation times its decoder row's cosine with the probe (its projection when decoder rows are unit-norm, as they
    are for every SAE evaluated here: see fold_activation_scale).
    """
    unit_D = probe_D / probe_D.norm()
    projection_N = acts_ND.float() @ unit_D
    cos_F = F.cosine_similarity(W_dec_FD, unit_D[None], dim=-1)
    contribution_NF = latents_NF * cos_F[None]
    is_main_F = torch.zeros(W_dec_FD.shape[0], dtype=torch.bool)
    is_main_F[main_ids] = True
    main_silent_N = (latents_NF[:, is_main_F] < SILENT).all(dim=-1)
    top_value_N, top_latent_N = contribution_NF.max(dim=-1)
    share_N = top_value_N / projection_N
    full_N = main_silent_N & (cos_F[top_latent_N] >= settings.full_absorption_cos) & (projection_N >= 0) & (share_N >= settings.projection_fraction)

    main_projection_N = contribution_NF[:, is_main_F].sum(dim=-1)
    candidate_NF = (~is_main_F & (cos_F >= settings.fraction_cos))[None] & (contribution_NF > 0)
    absorbing_N = torch.where(candidate_NF, contribution_NF, torch.zeros_like(contribution_NF)).topk(
        min(settings.max_absorbing_latents, contribution_NF.shape[1]), dim=-1).values.sum(dim=-1)
    unaccounted_N = projection_N - main_projection_N
    absorbed_N = torch.minimum(absorbing_N, unaccounted_N)
    partial_N = (absorbed_N / (absorbed_N + main_projection_N)).nan_to_num(0.0).clamp(0.0, 1.0)
    no_absorption_N = (main_projection_N >= projection_N) | (absorbing_N / projection_N < settings.projection_fraction)
    fraction_N = torch.where(no_absorption_N, 0.0, torch.where(main_projection_N <= 0, 1.0, partial_N))
    return full_N, fraction_N, top_latent_N, share_N


def letter_results(sae: SparseAutoencoder, setup: SpellingSetup, settings: AbsorptionSettings, seed: int) -> list[LetterResult]:
    """Absorption per letter, scored as SAEBench does: on the test words of the letter whose ground-truth probe fires
    (its probe true positives), each re-prompted with new ICL examples (score_acts), do its main latents stay silent?"""
    with torch.no_grad():
        train_NF, test_NF = encode_all(sae, setup.train_acts_ND), encode_all(sae, setup.test_acts_ND)
        score_NF = encode_all(sae, setup.score_acts_ND)
        W_dec_FD = sae.W_dec.detach().float()
    chosen = main_latents(train_NF, setup.train_letter_N, test_NF, setup.test_letter_N, settings, seed)
    scores_NL = setup.test_acts_ND @ setup.probe_W_LD.T + setup.probe_b_L
    results = []
    for letter in range(len(LETTERS)):
        rows_T = torch.nonzero((setup.test_letter_N == letter) & (scores_NL[:, letter] > 0)).flatten()
        full_T, fraction_T, top_T, share_T = word_absorption(
            setup.score_acts_ND[rows_T], score_NF[rows_T], W_dec_FD, setup.probe_W_LD[letter], chosen[letter], settings)
        n = len(rows_T)
        absorbed = [
            {"word": setup.test_words[int(row)], "absorbing_latent": int(top), "projection_share": round(float(share), 4)}
            for row, is_full, top, share in zip(rows_T, full_T, top_T, share_T, strict=True) if is_full
        ]
        results.append(LetterResult(
            letter=LETTERS[letter], probe_f1=float(setup.probe_f1_L[letter]), main_latents=chosen[letter],
            n_probe_true_positives=n, n_full_absorption=int(full_T.sum()),
            full_absorption_rate=float(full_T.float().mean()) if n else float("nan"),
            mean_absorption_fraction=float(fraction_T.mean()) if n else float("nan"), absorbed=absorbed,
        ))
    return results


def absorption_on_words(
    model: LoadedModel, layer: int, sae: SparseAutoencoder, train_words: list[str], test_words: list[str],
    abs_cfg: Mapping[str, Any], seed: int, batch_size: int, pools: tuple[list[str], list[str], list[str]] | None = None,
) -> tuple[list[LetterResult], dict[str, float], str]:
    """Our absorption eval on explicit words (parity harness: run SAEBench and us on identical train/test words).

    `train_words` / `test_words` are vocabulary strings as SAEBench's get_alpha_tokens writes them (" cat", "cat");
    `pools` = (train, test, whole-vocabulary) ICL pools, by default the word lists themselves (see setup_for_words).
    Returns the per-letter results, the `absorption/*` metrics and the status line. Nothing is cached.
    """
    setup = as_setup(*setup_for_words(model, layer, train_words, test_words, abs_cfg, seed, batch_size, pools))
    settings = AbsorptionSettings.from_config(abs_cfg)
    results = letter_results(sae, setup, settings, seed)
    return results, *summarise(results, settings)


def passes_probe_gate(probe_f1: float, n_probe_true_positives: int, min_probe_f1: float) -> bool:
    """Whether a letter's ground-truth probe is good enough for its absorption to count (SAEBench's F1 gate)."""
    return probe_f1 > min_probe_f1 and n_probe_true_positives > 0


def summarise(results: list[LetterResult], settings: AbsorptionSettings) -> tuple[dict[str, float], str]:
    """`absorption/*` metrics over the letters whose probe passes the F1 gate, and a status line."""
    kept = [r for r in results if passes_probe_gate(r.probe_f1, r.n_probe_true_positives, settings.min_probe_f1)]
    full = np.array([r.full_absorption_rate for r in kept])
    fraction = np.array([r.mean_absorption_fraction for r in kept])
    splits = np.array([len(r.main_latents) for r in kept])
    enough = len(kept) >= settings.min_letters
    status = "ok" if enough else f"too few letters: {len(kept)} pass the probe-F1 gate (> {settings.min_probe_f1}), {settings.min_letters} needed"
    if not kept:
        return {"absorption/n_letters": 0.0, "absorption/enough_letters": 0.0}, status
    se = (lambda values: float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan"))
    return {
        "absorption/mean_full_absorption_score": float(full.mean()),
        "absorption/mean_absorption_fraction_score": float(fraction.mean()),
        "absorption/full_absorption_complement": float(1.0 - full.mean()),
        "absorption/mean_num_split_features": float(splits.mean()),
        "absorption/n_letters": float(len(kept)),
        "absorption/enough_letters": float(enough),
        "absorption/mean_full_absorption_score_se": se(full),
        "absorption/mean_absorption_fraction_score_se": se(fraction),
    }, status
