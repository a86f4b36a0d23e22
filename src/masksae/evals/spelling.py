"""First-letter task shared by every SAE of a (model, layer): vocabulary, ICL prompts, LLM activations, ground-truth probe."""

from __future__ import annotations

import logging
import math
import random
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.multiclass import OneVsRestClassifier
from transformers import PreTrainedTokenizerBase

from masksae.models import LoadedModel
from masksae.progress import progress

log = logging.getLogger(__name__)
LETTERS = string.ascii_lowercase
# SAEBench 0.6.0 common.train_and_save_probes / probing.train_linear_probe_for_task: the ground-truth probe's training.
PROBE_EPOCHS, PROBE_LR, PROBE_END_LR, PROBE_WEIGHT_DECAY, PROBE_BATCH = 50, 1e-2, 1e-5, 1e-4, 64


@dataclass
class SpellingSetup:
    """Residuals at the query word of each prompt, the words' first letters, and the 26-way one-vs-rest probe."""

    train_acts_ND: torch.Tensor
    train_letter_N: torch.Tensor
    test_acts_ND: torch.Tensor
    test_letter_N: torch.Tensor
    test_words: list[str]
    # The test words again, each in a new prompt whose ICL examples come from the whole vocabulary: SAEBench's
    # FeatureAbsorptionCalculator re-prompts the words it scores, and absorption is measured on these.
    score_acts_ND: torch.Tensor
    probe_W_LD: torch.Tensor  # acts on raw residuals: score = x @ W.T + b, positive means "starts with this letter"
    probe_b_L: torch.Tensor
    probe_f1_L: torch.Tensor  # the probe's F1 per letter on the test words


def first_letter(word: str) -> str:
    """The lower-case first letter of a vocabulary word (a leading space is skipped)."""
    return word.lstrip(" ")[0].lower()


def alphabetic_words(tokenizer: PreTrainedTokenizerBase, leading_space: bool = True) -> list[str]:
    """Distinct single-token strings made of ASCII letters, optionally after one leading space (SAEBench's
    vocab.get_alpha_tokens, allow_leading_space=True by default); single letters count, as there."""
    words = set()
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        word = text[1:] if leading_space and text.startswith(" ") else text
        if word and word.isascii() and word.isalpha():
            words.add(text)
    return sorted(words)


def icl_prompt(word: str, examples: list[str], template: str) -> str:
    """SAEBench's prompting.create_icl_prompt (separator prepended, answer " W"), cut right after the query word.

    Activations at the word cannot see later tokens (causal attention), so reading the last token of this prefix is
    SAEBench's reading at prompt_token_pos=-6 of the whole prompt.
    """
    lines = [f"{template.format(word=example)} {first_letter(example).upper()}" for example in examples]
    return "\n" + "\n".join([*lines, template.split("{word}")[0] + word])


def draw_examples(word: str, pool: list[str], n: int, rng: random.Random) -> list[str]:
    """`n` ICL examples sampled from `pool`, redrawn while they contain the word (SAEBench's check_contamination)."""
    for _ in range(1000):
        examples = rng.sample(pool, n)
        if word not in examples:
            return examples
    raise ValueError(f"no ICL examples without {word!r} in a pool of {len(pool)}")


def split_vocabulary(words: list[str], abs_cfg: Mapping[str, Any], seed: int) -> tuple[list[str], list[str], list[str], list[str]]:
    """Train words, test words and their ICL pools: the shuffled vocabulary split (1 - test_fraction) : test_fraction as
    SAEBench's probing.create_dataset_probe_training does (the pools), then at most `words_per_letter` words per letter
    kept in that ratio (every word when words_per_letter exceeds the vocabulary, as in SAEBench)."""
    shuffled = random.Random(seed).sample(words, len(words))
    cut = int(len(shuffled) * (1 - float(abs_cfg.test_fraction)))
    pools = {"train": shuffled[:cut], "test": shuffled[cut:]}
    per_letter = int(abs_cfg.words_per_letter)
    n_test = max(1, round(per_letter * float(abs_cfg.test_fraction)))
    caps = {"train": max(1, per_letter - n_test), "test": n_test}
    chosen: dict[str, list[str]] = {}
    for split, pool in pools.items():
        counts = dict.fromkeys(LETTERS, 0)
        chosen[split] = []
        for word in pool:
            if counts[first_letter(word)] < caps[split]:
                counts[first_letter(word)] += 1
                chosen[split].append(word)
    return chosen["train"], chosen["test"], pools["train"], pools["test"]


@torch.inference_mode()
def word_activations(model: LoadedModel, layer: int, prompts: list[str], batch_size: int) -> torch.Tensor:
    """Residual at the last token (the query word) of each prompt, [N, D]; prompts are right-padded per batch."""
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer(prompt).input_ids for prompt in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a batch: less padding
    rows: dict[int, torch.Tensor] = {}
    starts = range(0, len(order), batch_size)
    for start in progress(starts, len(starts), "absorption set-up: ICL prompts through the LLM", "batches", log):
        batch = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids_BS = torch.tensor([encoded[i] + [pad_id] * (width - len(encoded[i])) for i in batch])
        last_B = torch.tensor([len(encoded[i]) - 1 for i in batch])
        resid_BSD = model.residual_at(ids_BS, layer).float().cpu()
        rows.update(zip(batch, resid_BSD[torch.arange(len(batch)), last_B], strict=True))
    return torch.stack([rows[i] for i in range(len(encoded))])


def train_multi_probe(
    x_ND: torch.Tensor, y_NL: torch.Tensor, *, seed: int, epochs: int, batch_size: int, lr: float = 1e-2, end_lr: float = 1e-5,
    weight_decay: float = 0.0, l1: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAEBench's probing.train_multi_probe: L one-vs-rest logistic probes [L, D], [L] trained together with BCE whose
    pos_weight is each class's negatives / positives, Adam (weight decay), learning rate decayed exponentially from
    `lr` to `end_lr` over the epochs, optional L1 penalty l1 * mean over probes of sum |W| (its k-sparse selection)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        linear = torch.nn.Linear(x_ND.shape[1], y_NL.shape[1])
    positives_L = y_NL.sum(dim=0)
    pos_weight_L = (len(y_NL) - positives_L) / positives_L.clamp_min(1)
    optimizer = torch.optim.Adam(linear.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=math.exp(math.log(end_lr / lr) / epochs))
    threads = torch.get_num_threads()
    # Thousands of small steps: one thread (two contending threads took 61 s instead of 4 s on a busy 2-core machine).
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():
            for _ in range(epochs):
                for batch_B in torch.randperm(len(x_ND), generator=generator).split(batch_size):
                    logits_BL = linear(x_ND[batch_B])
                    loss = F.binary_cross_entropy_with_logits(logits_BL, y_NL[batch_B], pos_weight=pos_weight_L)
                    if l1:
                        loss = loss + l1 * linear.weight.abs().sum(dim=-1).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                schedule.step()
    finally:
        torch.set_num_threads(threads)
    return linear.weight.detach().clone(), linear.bias.detach().clone()


def fit_letter_probe(
    train_acts_ND: torch.Tensor, train_letter_N: torch.Tensor, test_acts_ND: torch.Tensor, test_letter_N: torch.Tensor,
    kind: str = "saebench", seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 26 one-vs-rest letter probes (weights in raw residual space) and each letter's F1 on the test words.

    kind "saebench": SAEBench's multi-class BCE probe with pos_weight (train_multi_probe, its probe settings).
    kind "sklearn": class-balanced scikit-learn logistic regressions after one global rescale (per-dimension RMS 1),
    which converge fully where the SAEBench probe's 50 Adam epochs on raw residuals may not.
    """
    if kind == "saebench":
        y_NL = F.one_hot(train_letter_N, len(LETTERS)).float()
        W_LD, b_L = train_multi_probe(train_acts_ND.float(), y_NL, seed=seed, epochs=PROBE_EPOCHS, batch_size=PROBE_BATCH,
                                      lr=PROBE_LR, end_lr=PROBE_END_LR, weight_decay=PROBE_WEIGHT_DECAY)
    else:
        scale = float(train_acts_ND.pow(2).mean().sqrt())
        probe = OneVsRestClassifier(LogisticRegression(max_iter=2000, class_weight="balanced")).fit(
            (train_acts_ND / scale).numpy(), train_letter_N.numpy())
        W_LD = torch.zeros(len(LETTERS), train_acts_ND.shape[1])
        b_L = torch.full((len(LETTERS),), -1e9)
        for index, estimator in zip(list(probe.classes_), probe.estimators_, strict=True):
            W_LD[index] = torch.from_numpy(estimator.coef_[0]).float() / scale
            b_L[index] = float(estimator.intercept_[0])
    scores_NL = test_acts_ND.float() @ W_LD.T + b_L
    f1_L = torch.tensor([
        f1_score(test_letter_N.numpy() == letter, scores_NL[:, letter].numpy() > 0, zero_division=0.0)
        for letter in range(len(LETTERS))
    ])
    return W_LD, b_L, f1_L


def setup_for_words(
    model: LoadedModel, layer: int, train_words: list[str], test_words: list[str], abs_cfg: Mapping[str, Any], seed: int,
    batch_size: int, pools: tuple[list[str], list[str], list[str]] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The first-letter set-up on explicit train and test words (also the parity harness's entry point).

    ICL examples are drawn as in SAEBench: a train word's from the train pool, a test word's from the test pool, and the
    re-prompted test words' (score_acts) from the whole-vocabulary pool; `pools` = (train, test, whole), by default
    (train_words, test_words, train_words + test_words).
    """
    started = time.perf_counter()
    rng = random.Random(seed)
    train_pool, test_pool, whole_pool = pools or (train_words, test_words, train_words + test_words)
    n, template = int(abs_cfg.icl_examples), str(abs_cfg.prompt_template)
    prompts = [icl_prompt(word, draw_examples(word, train_pool, n, rng), template) for word in train_words]
    prompts += [icl_prompt(word, draw_examples(word, test_pool, n, rng), template) for word in test_words]
    prompts += [icl_prompt(word, draw_examples(word, whole_pool, n, rng), template) for word in test_words]
    acts_ND = word_activations(model, layer, prompts, batch_size)
    n_train, n_test = len(train_words), len(test_words)
    train_letter_N = torch.tensor([LETTERS.index(first_letter(word)) for word in train_words])
    test_letter_N = torch.tensor([LETTERS.index(first_letter(word)) for word in test_words])
    train_acts_ND, test_acts_ND = acts_ND[:n_train], acts_ND[n_train : n_train + n_test]
    W_LD, b_L, f1_L = fit_letter_probe(train_acts_ND, train_letter_N, test_acts_ND, test_letter_N, str(abs_cfg.probe), seed)
    log.info("absorption set-up: %d prompts, probe F1 > 0.6 for %d letters, %.0f s", len(prompts), int((f1_L > 0.6).sum()),
             time.perf_counter() - started)
    tensors = {
        "train_acts_ND": train_acts_ND, "train_letter_N": train_letter_N, "test_acts_ND": test_acts_ND,
        "test_letter_N": test_letter_N, "score_acts_ND": acts_ND[n_train + n_test :],
        "probe_W_LD": W_LD, "probe_b_L": b_L, "probe_f1_L": f1_L,
    }
    return tensors, {"test_words": list(test_words), "n_prompts": len(prompts)}


def build_spelling_setup(model: LoadedModel, layer: int, abs_cfg: Mapping[str, Any], seed: int, batch_size: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Compute the shared first-letter data for one (model, layer, eval settings); tensors plus JSON info for the store."""
    vocabulary = alphabetic_words(model.tokenizer, bool(abs_cfg.leading_space_words))
    train_words, test_words, train_pool, test_pool = split_vocabulary(vocabulary, abs_cfg, seed)
    return setup_for_words(model, layer, train_words, test_words, abs_cfg, seed, batch_size,
                           pools=(train_pool, test_pool, vocabulary))


def as_setup(tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> SpellingSetup:
    """The stored artifact as a SpellingSetup."""
    return SpellingSetup(
        train_acts_ND=tensors["train_acts_ND"], train_letter_N=tensors["train_letter_N"],
        test_acts_ND=tensors["test_acts_ND"], test_letter_N=tensors["test_letter_N"], test_words=list(info["test_words"]),
        score_acts_ND=tensors["score_acts_ND"],
        probe_W_LD=tensors["probe_W_LD"], probe_b_L=tensors["probe_b_L"], probe_f1_L=tensors["probe_f1_L"],
    )
