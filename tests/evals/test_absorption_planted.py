"""Planted ground truth for the absorption metric, no LLM: letters are parent directions, rare child words add a child direction.

An SAE whose child latents absorb the parent (the parent latent is silent on child words) must score clearly
positive full absorption; an SAE that keeps a separate parent latent firing on every word must score about zero.
"""

from __future__ import annotations

import pytest
import torch

from masksae.evals.absorption import AbsorptionSettings, letter_results, summarise
from masksae.evals.spelling import SpellingSetup, fit_letter_probe
from masksae.saes import SparseAutoencoder, build_sae

N_LETTERS, CHILDREN, GENERIC, D_IN = 6, 50, 200, 320
CHILD_WORDS = 2 * CHILDREN  # two words per child: a third of each letter's words
SETTINGS = AbsorptionSettings(min_letters=N_LETTERS, k_sparse_probe_batch_size=64)


def planted_directions() -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal parent directions [L, D] and child directions [L, C, D]."""
    basis_DK, _ = torch.linalg.qr(torch.randn(D_IN, N_LETTERS * (1 + CHILDREN), generator=torch.Generator().manual_seed(0)))
    basis_KD = basis_DK.T
    return basis_KD[:N_LETTERS], basis_KD[N_LETTERS:].reshape(N_LETTERS, CHILDREN, D_IN)


def planted_setup(parents_LD: torch.Tensor, children_LCD: torch.Tensor) -> SpellingSetup:
    """Words of each letter: 3 * parent + noise, and for child words also 3 * their child direction."""
    generator = torch.Generator().manual_seed(1)
    acts, letters = [], []
    for letter in range(N_LETTERS):
        child_DW = torch.cat([torch.zeros(GENERIC, D_IN), 3 * children_LCD[letter].repeat_interleave(2, dim=0)])
        noise = torch.randn(GENERIC + CHILD_WORDS, D_IN, generator=generator) / D_IN**0.5
        acts.append(3 * parents_LD[letter] + child_DW + noise)
        letters.append(torch.full((GENERIC + CHILD_WORDS,), letter))
    acts_ND, letter_N = torch.cat(acts), torch.cat(letters)
    is_test_N = torch.rand(len(acts_ND), generator=generator) < 0.2
    W_LD, b_L, f1_L = fit_letter_probe(acts_ND[~is_test_N], letter_N[~is_test_N], acts_ND[is_test_N], letter_N[is_test_N])
    return SpellingSetup(
        train_acts_ND=acts_ND[~is_test_N], train_letter_N=letter_N[~is_test_N], test_acts_ND=acts_ND[is_test_N],
        test_letter_N=letter_N[is_test_N], test_words=[f"w{i}" for i in range(int(is_test_N.sum()))],
        score_acts_ND=acts_ND[is_test_N],
        probe_W_LD=W_LD, probe_b_L=b_L, probe_f1_L=f1_L,
    )


def hand_built_sae(encoders_FD: torch.Tensor, decoders_FD: torch.Tensor) -> SparseAutoencoder:
    """A JumpReLU SAE with the given encoder and decoder rows and threshold 1.5 (half of a present feature's 3)."""
    sae = build_sae({"architecture": "jumprelu", "d_sae": len(encoders_FD), "lr": 1e-3, "adam_betas": [0.0, 0.999],
                     "adam_eps": 1e-8, "bandwidth": 0.05, "initial_threshold": 1.5, "sparsity_coeff": 1.0, "target_l0": None,
                     "pre_act_loss_coeff": 0.0}, D_IN)
    with torch.no_grad():
        sae.W_enc.copy_(encoders_FD.T)
        sae.W_dec.copy_(decoders_FD / decoders_FD.norm(dim=-1, keepdim=True))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


@pytest.fixture(scope="module")
def planted() -> tuple[torch.Tensor, torch.Tensor, SpellingSetup]:
    parents_LD, children_LCD = planted_directions()
    return parents_LD, children_LCD, planted_setup(parents_LD, children_LCD)


def test_ground_truth_probe_finds_every_planted_letter(planted) -> None:
    *_, setup = planted
    assert (setup.probe_f1_L[:N_LETTERS] > 0.95).all()
    assert (setup.probe_f1_L[N_LETTERS:] == 0).all()


def test_sae_whose_children_absorb_the_parent_scores_high_full_absorption(planted) -> None:
    parents_LD, children_LCD, setup = planted
    children_KD = children_LCD.flatten(0, 1)
    # The parent latent is switched off by any child; each child latent's decoder carries the parent direction.
    parent_encoders_LD = parents_LD - children_LCD.sum(dim=1)
    child_decoders_KD = children_KD + parents_LD.repeat_interleave(CHILDREN, dim=0)
    sae = hand_built_sae(torch.cat([parent_encoders_LD, children_KD]), torch.cat([parents_LD, child_decoders_KD]))
    results = letter_results(sae, setup, SETTINGS, seed=0)
    metrics, status = summarise(results, SETTINGS)
    assert status == "ok" and metrics["absorption/n_letters"] == N_LETTERS
    # Each letter's main latent is its parent latent, and child words (a third of the words) are absorbed.
    assert all(r.main_latents[:1] == [index] for index, r in enumerate(results[:N_LETTERS]))
    assert 0.25 < metrics["absorption/mean_full_absorption_score"] < 0.42
    assert 0.25 < metrics["absorption/mean_absorption_fraction_score"] < 0.42
    absorbing = {row["absorbing_latent"] for r in results for row in r.absorbed}
    assert absorbing and min(absorbing) >= N_LETTERS  # only child latents absorb


def test_sae_that_keeps_the_parent_latent_scores_about_zero(planted) -> None:
    parents_LD, children_LCD, setup = planted
    directions_FD = torch.cat([parents_LD, children_LCD.flatten(0, 1)])
    metrics, status = summarise(letter_results(hand_built_sae(directions_FD, directions_FD), setup, SETTINGS, seed=0), SETTINGS)
    assert status == "ok"
    assert metrics["absorption/mean_full_absorption_score"] < 0.02
    assert metrics["absorption/mean_absorption_fraction_score"] < 0.02
    assert metrics["absorption/full_absorption_complement"] > 0.98


def test_too_few_letters_is_reported_not_hidden(planted) -> None:
    parents_LD, children_LCD, setup = planted
    directions_FD = torch.cat([parents_LD, children_LCD.flatten(0, 1)])
    metrics, status = summarise(letter_results(hand_built_sae(directions_FD, directions_FD), setup, SETTINGS, seed=0), AbsorptionSettings())
    assert metrics["absorption/enough_letters"] == 0.0 and metrics["absorption/n_letters"] == N_LETTERS
    assert status.startswith("too few letters: 6 pass")
