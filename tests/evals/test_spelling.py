"""The first-letter set-up follows SAEBench 0.6.0: its word set, prompt format, vocabulary split and pos_weight probe."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from sklearn.linear_model import LogisticRegression

from masksae.config import compose_config
from masksae.errors import ConfigError
from masksae.evals.spelling import LETTERS, alphabetic_words, icl_prompt, split_vocabulary, train_multi_probe
from masksae.evals.validate import validate_eval_config


class ListTokenizer:
    """A tokenizer stand-in whose token i decodes to TOKENS[i]."""

    TOKENS = ["<bos>", " cat", "cat", "Cat", "a", " I", "c4t", "  dog", " ", "", "é", "dog"]

    def __len__(self) -> int:
        return len(self.TOKENS)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.TOKENS[i] for i in ids)


def test_word_set_keeps_leading_space_words_and_single_letters() -> None:
    assert alphabetic_words(ListTokenizer()) == [" I", " cat", "Cat", "a", "cat", "dog"]
    assert alphabetic_words(ListTokenizer(), leading_space=False) == ["Cat", "a", "cat", "dog"]


def test_prompt_is_saebench_icl_prompt_cut_after_the_word() -> None:
    prompt = icl_prompt(" cat", [" dog", "Egg"], "{word} has the first letter:")
    assert prompt == "\n dog has the first letter: D\nEgg has the first letter: E\n cat"


def test_vocabulary_split_caps_letters_and_keeps_pools_disjoint() -> None:
    words = [letter + "".join(LETTERS[int(d)] for d in f"{i:03d}") for letter in LETTERS for i in range(50)]
    words = sorted(set(words))
    cfg = OmegaConf.create({"words_per_letter": 10, "test_fraction": 0.2})
    train, test, train_pool, test_pool = split_vocabulary(words, cfg, seed=0)
    assert not set(train_pool) & set(test_pool) and sorted(train_pool + test_pool) == words
    assert len(test_pool) == len(words) - int(len(words) * 0.8)
    assert set(train) <= set(train_pool) and set(test) <= set(test_pool)
    for letter in LETTERS:
        assert sum(w[0] == letter for w in train) == 8 and sum(w[0] == letter for w in test) == 2
    assert split_vocabulary(words, cfg, seed=0) == (train, test, train_pool, test_pool)
    everything = OmegaConf.create({"words_per_letter": 10**6, "test_fraction": 0.2})
    assert split_vocabulary(words, everything, seed=0)[:2] == (train_pool, test_pool)


def test_probe_pos_weight_finds_a_rare_overlapping_class() -> None:
    """A 4% class one standard deviation from the rest: an unweighted logistic probe almost never says "yes" (its prior
    odds are 1:24); SAEBench's pos_weight = negatives / positives balances the classes, so recall is high."""
    generator = torch.Generator().manual_seed(0)
    y_N = (torch.rand(5000, generator=generator) < 0.04).float()
    x_ND = torch.randn(5000, 4, generator=generator) + 1.5 * y_N[:, None] * torch.tensor([1.0, 0, 0, 0])
    y_NL = torch.stack([y_N, 1 - y_N], dim=1)
    W_LD, b_L = train_multi_probe(x_ND, y_NL, seed=0, epochs=30, batch_size=256)
    predicted_N = (x_ND @ W_LD[0] + b_L[0]) > 0
    recall = float(predicted_N[y_N == 1].float().mean())
    assert recall > 0.6
    # The data make the weight matter: the same probe without it (scikit-learn, unweighted) rarely says "yes".
    unweighted = LogisticRegression().fit(x_ND.numpy(), y_N.numpy())
    assert unweighted.predict(x_ND.numpy())[y_N.numpy() == 1].mean() < 0.2


@pytest.mark.parametrize(("override", "pattern"), [
    ("eval.absorption.probe=lbfgs", r"eval\.absorption\.probe='lbfgs'.*saebench.*sklearn"),
    ("eval.absorption.leading_space_words=maybe", r"eval\.absorption\.leading_space_words='maybe'.*true"),
])
def test_bad_absorption_keys_name_the_key(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        validate_eval_config(compose_config("train", [override]).eval)
