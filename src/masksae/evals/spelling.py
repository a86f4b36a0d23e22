"""First-letter task shared by every SAE of a (model, layer): vocabulary, ICL prompts, LLM activations, ground-truth probe."""

from __future__ import annotations

import logging
import random
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.multiclass import OneVsRestClassifier
from transformers import PreTrainedTokenizerBase

from masksae.models import LoadedModel

log = logging.getLogger(__name__)
LETTERS = string.ascii_lowercase


@dataclass
class SpellingSetup:
    """Residuals at the query word of each prompt, the words' first letters, and the 26-way one-vs-rest probe."""

    train_acts_ND: torch.Tensor
    train_letter_N: torch.Tensor
    test_acts_ND: torch.Tensor
    test_letter_N: torch.Tensor
    test_words: list[str]
    probe_W_LD: torch.Tensor  # acts on raw residuals: score = x @ W.T + b, positive means "starts with this letter"
    probe_b_L: torch.Tensor
    probe_f1_L: torch.Tensor  # the probe's F1 per letter on the test words


def alphabetic_vocabulary(tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """Token ids per first letter of single tokens that decode to >= 2 ASCII letters with no leading space."""
    by_letter: dict[str, list[int]] = {letter: [] for letter in LETTERS}
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if len(text) >= 2 and text.isascii() and text.isalpha():
            by_letter[text[0].lower()].append(token_id)
    return by_letter


def prompt_prefix(word: str, examples: list[str], template: str) -> str:
    """SAEBench-style ICL prompt ("{word} has the first letter: W" lines), cut right after the query word.

    Activations at the word cannot see later tokens (causal attention), so the rest of the query line is left out.
    """
    lines = [f"{template.format(word=example)} {example[0].upper()}" for example in examples]
    return "\n" + "\n".join([*lines, word])


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, word: str, token_id: int, examples: list[str], template: str) -> list[int] | None:
    """Token ids of the prompt, or None when the tokenizer does not keep the query word as its own token."""
    ids = tokenizer(prompt_prefix(word, examples, template)).input_ids
    return ids if ids[-1] == token_id else None


def sample_words(tokenizer: PreTrainedTokenizerBase, abs_cfg: Mapping[str, Any], seed: int) -> list[tuple[str, list[int], str, str]]:
    """(word, prompt ids, letter, split) for up to `words_per_letter` words of each letter, split train/test per letter."""
    rng = random.Random(seed)
    vocabulary = alphabetic_vocabulary(tokenizer)
    pool = [tokenizer.decode([t]) for ids in vocabulary.values() for t in ids]
    rows = []
    for letter in LETTERS:
        candidates = sorted(vocabulary[letter])
        rng.shuffle(candidates)
        chosen: list[tuple[str, list[int]]] = []
        for token_id in candidates:
            word = tokenizer.decode([token_id])
            examples = [w for w in rng.sample(pool, int(abs_cfg.icl_examples) + 1) if w != word][: int(abs_cfg.icl_examples)]
            ids = _prompt_ids(tokenizer, word, token_id, examples, str(abs_cfg.prompt_template))
            if ids is not None:
                chosen.append((word, ids))
            if len(chosen) == int(abs_cfg.words_per_letter):
                break
        n_test = max(1, round(len(chosen) * float(abs_cfg.test_fraction)))
        rows += [(word, ids, letter, "test" if i < n_test else "train") for i, (word, ids) in enumerate(chosen)]
    return rows


@torch.inference_mode()
def word_activations(model: LoadedModel, layer: int, prompts: list[list[int]], batch_size: int) -> torch.Tensor:
    """Residual at the last token (the query word) of each prompt, [N, D]; prompts are right-padded per batch."""
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else model.tokenizer.eos_token_id
    rows = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        width = max(len(p) for p in batch)
        ids_BS = torch.tensor([p + [pad_id] * (width - len(p)) for p in batch])
        last_B = torch.tensor([len(p) - 1 for p in batch])
        resid_BSD = model.residual_at(ids_BS, layer).float().cpu()
        rows.append(resid_BSD[torch.arange(len(batch)), last_B])
    return torch.cat(rows)


def fit_letter_probe(
    train_acts_ND: torch.Tensor, train_letter_N: torch.Tensor, test_acts_ND: torch.Tensor, test_letter_N: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """26 one-vs-rest class-balanced logistic probes (weights in raw residual space), each letter's F1 on the test words.

    Inputs are divided by one global scale (per-dimension RMS 1) for conditioning; directions are unchanged.
    """
    scale = float(train_acts_ND.pow(2).mean().sqrt())
    x_train = (train_acts_ND / scale).numpy()
    probe = OneVsRestClassifier(LogisticRegression(max_iter=2000, class_weight="balanced")).fit(x_train, train_letter_N.numpy())
    classes = list(probe.classes_)
    W_LD = torch.zeros(len(LETTERS), train_acts_ND.shape[1])
    b_L = torch.full((len(LETTERS),), -1e9)
    for index, estimator in zip(classes, probe.estimators_, strict=True):
        W_LD[index] = torch.from_numpy(estimator.coef_[0]).float() / scale
        b_L[index] = float(estimator.intercept_[0])
    scores_NL = test_acts_ND @ W_LD.T + b_L
    f1_L = torch.tensor([
        f1_score(test_letter_N.numpy() == letter, scores_NL[:, letter].numpy() > 0, zero_division=0.0)
        for letter in range(len(LETTERS))
    ])
    return W_LD, b_L, f1_L


def build_spelling_setup(model: LoadedModel, layer: int, abs_cfg: Mapping[str, Any], seed: int, batch_size: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Compute the shared first-letter data for one (model, layer, eval settings); tensors plus JSON info for the store."""
    started = time.perf_counter()
    rows = sample_words(model.tokenizer, abs_cfg, seed)
    acts_ND = word_activations(model, layer, [ids for _, ids, _, _ in rows], batch_size)
    letter_N = torch.tensor([LETTERS.index(letter) for _, _, letter, _ in rows])
    is_test_N = torch.tensor([split == "test" for *_, split in rows])
    W_LD, b_L, f1_L = fit_letter_probe(acts_ND[~is_test_N], letter_N[~is_test_N], acts_ND[is_test_N], letter_N[is_test_N])
    log.info("absorption set-up: %d prompts, probe F1 > 0.6 for %d letters, %.0f s", len(rows), int((f1_L > 0.6).sum()), time.perf_counter() - started)
    tensors = {
        "train_acts_ND": acts_ND[~is_test_N], "train_letter_N": letter_N[~is_test_N],
        "test_acts_ND": acts_ND[is_test_N], "test_letter_N": letter_N[is_test_N],
        "probe_W_LD": W_LD, "probe_b_L": b_L, "probe_f1_L": f1_L,
    }
    info = {"test_words": [word for word, _, _, split in rows if split == "test"], "n_prompts": len(rows)}
    return tensors, info


def as_setup(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> SpellingSetup:
    """The stored artifact as a SpellingSetup."""
    return SpellingSetup(
        train_acts_ND=tensors["train_acts_ND"], train_letter_N=tensors["train_letter_N"],
        test_acts_ND=tensors["test_acts_ND"], test_letter_N=tensors["test_letter_N"], test_words=list(info["test_words"]),
        probe_W_LD=tensors["probe_W_LD"], probe_b_L=tensors["probe_b_L"], probe_f1_L=tensors["probe_f1_L"],
    )
