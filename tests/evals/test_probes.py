"""Probes as the references fit them: regularisers that are what they claim on the installed scikit-learn (pyproject
requires >= 1.8, where `l1_ratio=1.0` is the L1 penalty; before 1.8 the default penalty="l2" silently won), sae-probes's
validation splits and last-token representation, SAEBench's averaging over data sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masksae.evals.probes import fit_probe, validation_splits
from masksae.evals.runner import _mean_and_se
from masksae.evals.task_activations import TaskActivations, ids_ending_at_a_word


def _task(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two informative features among 60 noise ones."""
    rng = np.random.default_rng(seed)
    x_NF = rng.normal(size=(400, 62))
    y_N = (x_NF[:, 0] + x_NF[:, 1] + 0.3 * rng.normal(size=400) > 0).astype(int)
    return x_NF, y_N


def test_the_l1_probe_zeroes_most_noise_features_and_the_l2_probe_none() -> None:
    x_NF, y_N = _task()
    l1_coef = fit_probe(x_NF, y_N, c=0.05, l1=True).coef_[0]
    l2_coef = fit_probe(x_NF, y_N, c=0.05, l1=False).coef_[0]
    assert np.count_nonzero(l1_coef[2:]) < 15 and np.all(l1_coef[:2] != 0)
    assert np.count_nonzero(l2_coef) == 62


def test_the_l1_probe_is_the_same_fit_whatever_numpy_s_global_generator_did() -> None:
    x_NF, y_N = _task(1)
    np.random.seed(1)
    first = fit_probe(x_NF, y_N, c=0.3, l1=True).coef_
    np.random.seed(2)
    assert np.array_equal(fit_probe(x_NF, y_N, c=0.3, l1=True).coef_, first)


def test_validation_splits_follow_sae_probes() -> None:
    y_small = np.array([0, 1] * 30)
    small = validation_splits(y_small, seed=0)
    assert len(small) == 6 and all(len(set(y_small[val])) == 2 for _, val in small)  # stratified folds below 128
    y_large = np.array([0, 1] * 300)
    [(fit, val)] = validation_splits(y_large, seed=0)
    assert len(val) == 100 and sorted(np.concatenate([fit, val]).tolist()) == list(range(600))  # min(20%, 100) held out


def test_probing_scores_average_per_data_set_then_across() -> None:
    rows = [{"task": "a/x", "acc": 1.0}, {"task": "a/y", "acc": 0.0}, {"task": "a/z", "acc": 0.5}, {"task": "b/x", "acc": 1.0}]
    metrics = _mean_and_se("sparse_probing", rows)
    assert metrics["sparse_probing/acc"] == 0.75  # (0.5 + 1.0) / 2, not the 0.625 of pooling the four tasks
    assert metrics["sparse_probing/acc_se"] == pytest.approx(np.std([0.5, 1.0], ddof=1) / np.sqrt(2))


def test_the_last_token_representation_is_each_text_s_last_kept_token() -> None:
    acts_TD = torch.arange(12, dtype=torch.float32).view(6, 2)
    task = TaskActivations(acts_TD, torch.tensor([0, 0, 0, 1, 2, 2]), ["a", "b", "a"], ["train"] * 3, {})
    assert torch.equal(task.last_token_residuals(), acts_TD[[2, 3, 5]])
    assert torch.equal(task.residuals("mean"), torch.stack([acts_TD[:3].mean(0), acts_TD[3], acts_TD[4:].mean(0)]))


def test_a_text_longer_than_the_context_is_cut_where_a_word_ends(gemma) -> None:
    """The real tokenizer: plain truncation stops inside a word (a fragment as the last token); the cut keeps whole
    words only, and a text that fits is tokenized as it is."""
    tokenizer = gemma.tokenizer
    text = "Die Donaudampfschifffahrtsgesellschaft beschäftigt Kapitänsmützenhersteller und Schifffahrtskaufleute " * 4

    def truncated(context: int) -> str:
        return tokenizer.decode(tokenizer(text, truncation=True, max_length=context).input_ids, skip_special_tokens=True)

    context = next(c for c in range(8, 40) if text[len(truncated(c))] != " ")  # where plain truncation ends mid-word
    ids = ids_ending_at_a_word(tokenizer, text, context)
    kept = tokenizer.decode(ids, skip_special_tokens=True)
    assert len(ids) <= context and text.startswith(kept) and text[len(kept)] == " "
    with_next_word = text[: text.index(" ", len(kept) + 1)]
    assert len(tokenizer(with_next_word).input_ids) > context  # as many whole words as fit
    short = "Masked regularisation."
    assert ids_ending_at_a_word(tokenizer, short, context) == tokenizer(short).input_ids
