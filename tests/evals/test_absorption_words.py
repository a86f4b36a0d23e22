"""The parity entry point (absorption on explicit words) end to end, with a stand-in LLM whose residual at a word is its
letter's planted direction: every letter is found, each by its own latent, and nothing is absorbed."""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch
from omegaconf import OmegaConf

from masksae.evals.absorption import absorption_on_words
from masksae.evals.spelling import LETTERS, first_letter
from tests.evals.test_absorption_planted import D_IN, hand_built_sae

PIECES = re.compile(r" ?[A-Za-z]+|\n|.")


class PieceTokenizer:
    """Splits text into words (with their leading space), newlines and single characters; ids are handed out on first
    sight (0 is <bos>, also the pad id)."""

    pad_token_id = 0

    def __init__(self) -> None:
        self.ids: dict[str, int] = {"<bos>": 0}
        self.pieces: list[str] = ["<bos>"]

    def __call__(self, text: str) -> SimpleNamespace:
        for piece in PIECES.findall(text):
            if piece not in self.ids:
                self.ids[piece] = len(self.pieces)
                self.pieces.append(piece)
        return SimpleNamespace(input_ids=[0] + [self.ids[piece] for piece in PIECES.findall(text)])


class PlantedModel:
    """The residual at a word token is 3 x its letter's direction plus noise; at any other token, noise only."""

    def __init__(self, letters_LD: torch.Tensor) -> None:
        self.tokenizer = PieceTokenizer()
        self.letters_LD = letters_LD

    def residual_at(self, ids_BS: torch.Tensor, layer: int) -> torch.Tensor:
        out_BSD = torch.zeros(*ids_BS.shape, D_IN)
        for (b, s), token in zip(torch.cartesian_prod(*map(torch.arange, ids_BS.shape)).tolist(), ids_BS.flatten().tolist(), strict=True):
            piece = self.tokenizer.pieces[token].lstrip(" ")
            noise_D = torch.randn(D_IN, generator=torch.Generator().manual_seed(token)) / D_IN**0.5
            out_BSD[b, s] = noise_D + (3 * self.letters_LD[LETTERS.index(first_letter(piece))] if piece.isalpha() else 0)
        return out_BSD


def test_absorption_on_explicit_words_finds_every_letter_by_its_own_latent() -> None:
    basis_DL, _ = torch.linalg.qr(torch.randn(D_IN, len(LETTERS), generator=torch.Generator().manual_seed(0)))
    letters_LD = basis_DL.T
    words = [f"{space}{letter}{LETTERS[i]}{LETTERS[j]}" for letter in LETTERS for i, j, space in
             [(i, (7 * i) % 26, " " if i % 2 else "") for i in range(12)]]
    train_words = [w for i, w in enumerate(words) if i % 4]
    test_words = [w for i, w in enumerate(words) if i % 4 == 0]
    abs_cfg = OmegaConf.load("conf/eval/fast.yaml").absorption
    abs_cfg.icl_examples = 3
    sae = hand_built_sae(letters_LD, letters_LD)
    results, metrics, status = absorption_on_words(PlantedModel(letters_LD), 6, sae, train_words, test_words, abs_cfg, seed=0,
                                                   batch_size=32)
    assert status == "ok" and metrics["absorption/n_letters"] == 26
    assert [r.main_latents for r in results] == [[index] for index in range(26)]
    assert all(r.n_probe_true_positives == 3 for r in results)
    assert metrics["absorption/mean_full_absorption_score"] == 0.0
