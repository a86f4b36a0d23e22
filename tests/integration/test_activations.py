"""Activations: special positions left out, masks applied before the LLM, the cache written atomically and validated,
streaming when the cache budget is too small."""

from __future__ import annotations

import torch

import pytest

from masksae.activation_cache import ActivationCache
from masksae.activations import ActivationSpec, activation_chunks, compute_activations, special_positions, token_sequences
from masksae.corpora import Document

pytestmark = pytest.mark.slow

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "Sparse autoencoders decompose activations into interpretable latents. " * 20,
]


def _spec(mask_prob: float, n_tokens: int = 4 * 64) -> ActivationSpec:
    return ActivationSpec("gemma3-270m", None, 6, "test", "train", n_tokens, 64, mask_prob, 4, 0, "float32")


def test_sequences_start_with_bos_and_special_positions_are_left_out(gemma) -> None:
    sequences_NS = token_sequences([Document(t, f"doc{i}") for i, t in enumerate(TEXTS)], gemma.tokenizer, 64, 4)
    assert sequences_NS.shape == (4, 64)
    assert (sequences_NS[:, 0] == gemma.tokenizer.bos_token_id).all()
    n_special = int(special_positions(sequences_NS, gemma.special_ids()).sum())
    assert n_special >= 4  # BOS of every row, EOS between documents
    activations = compute_activations(gemma, sequences_NS, _spec(0.0), batch_size=2)
    assert activations.acts_ND.shape == (4 * 64 - n_special, gemma.d_model)
    bos_norm = gemma.residual_at(sequences_NS[:1], 6)[0, 0].norm()
    assert activations.acts_ND.norm(dim=1).max() < 0.5 * bos_norm  # the huge BOS residual is not among them


def test_masking_changes_activations_only_from_masked_positions_on(gemma) -> None:
    sequences_NS = token_sequences([Document(TEXTS[0], "doc")], gemma.tokenizer, 64, 2)
    clean = compute_activations(gemma, sequences_NS, _spec(0.0, 128), batch_size=2)
    masked = compute_activations(gemma, sequences_NS, _spec(0.3, 128), batch_size=2)
    assert masked.masked_N.any() and not clean.masked_N.any()
    first_masked = int(masked.masked_N.nonzero()[0])
    assert torch.equal(clean.acts_ND[:first_masked], masked.acts_ND[:first_masked])  # causal: before the first mask, identical
    assert not torch.allclose(clean.acts_ND[first_masked], masked.acts_ND[first_masked])


def test_cache_round_trip_in_shards_and_corruption_is_rebuilt(tmp_path, gemma) -> None:
    cache = ActivationCache(tmp_path)
    sequences_NS = token_sequences([Document(text, f"doc{i}") for i, text in enumerate(TEXTS)], gemma.tokenizer, 64, 4)
    spec = _spec(0.1, 256)
    builds = []

    def build(writer):
        builds.append(writer.sequences_done)
        for acts_TD, masked_T, done in activation_chunks(gemma, sequences_NS, spec, 1, first_sequence=writer.sequences_done):
            writer.append(acts_TD, masked_T, done)

    first = cache.get_or_build(spec, build, 10**7, d_model=gemma.d_model, shard_rows=100)
    second = cache.get_or_build(spec, build, 10**7, d_model=gemma.d_model, shard_rows=100)
    in_memory = compute_activations(gemma, sequences_NS, spec, batch_size=4)
    assert builds == [0] and len(first.entries) >= 2 and torch.equal(first.to_memory()[0], second.to_memory()[0])
    assert torch.allclose(first.to_memory()[0], in_memory.acts_ND, atol=1e-4) and torch.equal(first.masked_N(), in_memory.masked_N)
    assert [p.name for p in cache.root.iterdir() if not p.name.startswith(".")] == [spec.key()]
    shard = cache.folder(spec) / first.entries[-1].file
    shard.write_bytes(shard.read_bytes()[:1000])  # truncated: a crash mid-copy, a full disk
    assert cache.load(spec) is None
    third = cache.get_or_build(spec, build, 10**7, d_model=gemma.d_model, shard_rows=100)
    assert builds == [0, 0] and torch.equal(third.to_memory()[0], first.to_memory()[0])


def test_activation_key_changes_with_what_determines_activations() -> None:
    base = _spec(0.1)
    assert base.key() == _spec(0.1).key()
    assert len({base.key(), _spec(0.2).key(), ActivationSpec("gemma3-270m", None, 7, "test", "train", 256, 64, 0.1, 4, 0, "float32").key(),
                ActivationSpec("gemma3-270m", None, 6, "test", "train", 256, 64, 0.1, 4, 1, "float32").key()}) == 4


def test_clean_activations_are_keyed_without_the_mask_token(make_cfg) -> None:
    from masksae.resources import activation_spec

    cfg = make_cfg()
    assert activation_spec(cfg, "validation", 512, 0.0, 4).key() == activation_spec(cfg, "validation", 512, 0.0, None).key()
    assert activation_spec(cfg, "train", 512, 0.1, 4).key() != activation_spec(cfg, "train", 512, 0.1, 7).key()


def test_a_set_over_the_cache_budget_streams_the_same_activations(make_cfg, gemma) -> None:
    from masksae.activations import SequenceBlocks
    from masksae.batching import CachedBlocks
    from masksae.resources import activation_spec, training_data

    overrides = ("activations.train_tokens=1024", "activations.context_length=64", "training.batch_size=128",
                 "training.scale_sample=256", "masking.train_on_masked=false", "activations.shuffle_buffer_mb=1")
    cached_cfg, streamed_cfg = make_cfg(*overrides), make_cfg(*overrides, "activations.cache_budget_gb=0")
    spec = activation_spec(cached_cfg, "train", 1024, 0.2, 4)
    val_ND = torch.zeros(8, gemma.d_model)
    streamed = training_data(streamed_cfg, gemma, spec, val_ND)  # first: once cached, a set is read whatever the budget
    cached = training_data(cached_cfg, gemma, spec, val_ND)
    assert isinstance(cached.batches.source, CachedBlocks) and isinstance(streamed.batches.source, SequenceBlocks)
    assert streamed.n_rows == cached.n_rows and streamed.total_steps == cached.total_steps
    source = cached.batches.source
    cached_rows_ND = source.read(torch.arange(len(source.rows_per_block_K)), 0, cached.n_rows).take(torch.arange(cached.n_rows)).float()  # every kept row
    epoch_BD = torch.cat([batch for _, batch in zip(range(cached.n_rows // 128), streamed.train_dataloader())]) / streamed.scale
    distances = torch.cdist(epoch_BD, cached_rows_ND, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    assert distances.max() < 1e-3 * cached_rows_ND.norm(dim=1).mean()  # every streamed row of the epoch is a cached one
    assert len(cached_rows_ND) == cached.n_rows and not cached_rows_ND.eq(0).all(1).any()
    assert streamed.scale == pytest.approx(cached.scale, rel=0.05)


def test_a_resumed_stream_runs_the_llm_only_from_the_buffer_it_stopped_in(make_cfg, gemma, monkeypatch) -> None:
    from masksae.resources import activation_spec, training_data

    cfg = make_cfg("activations.train_tokens=2048", "activations.context_length=64", "training.batch_size=128",
                   "training.scale_sample=128", "training.epochs=2", "activations.cache_budget_gb=0", "activations.shuffle_buffer_mb=1.4")
    data = training_data(cfg, gemma, activation_spec(cfg, "train", 2048, 0.1, 4), torch.zeros(8, gemma.d_model))
    batches = data.batches
    assert batches.buffer_batches == 4 and batches.batches_per_epoch >= 12  # ~1900 rows of 640 floats: 4-batch buffers
    computed = []
    residual_at = type(gemma).residual_at
    monkeypatch.setattr(type(gemma), "residual_at", lambda self, ids_BS, layer: computed.append(len(ids_BS)) or residual_at(self, ids_BS, layer))
    whole = [batch.clone() for batch in data.train_dataloader()]
    buffers_per_epoch = -(-batches.batches_per_epoch // 4)
    assert len(whole) == data.total_steps  # every sequence once an epoch; one spanning two buffers is computed by both
    assert 2 * 32 <= sum(computed) <= 2 * (32 + buffers_per_epoch - 1)
    computed.clear()
    resume_at = batches.batches_per_epoch + 6  # epoch 1, buffer 1, 2 batches into it
    batches.start_step = lambda: resume_at
    resumed = list(data.train_dataloader())
    assert all(torch.equal(a, b) for a, b in zip(resumed, whole[resume_at:], strict=True)) and len(resumed) == len(whole) - resume_at
    _, ends_K = batches._epoch_layout(1)  # sequences that buffers 1.. of epoch 1 span (a boundary sequence in both)
    epoch_rows = batches.batches_per_epoch * 128
    spans = [(int(torch.searchsorted(ends_K, start, right=True)), int(torch.searchsorted(ends_K, min(start + 512, epoch_rows) - 1, right=True)))
             for start in range(512, epoch_rows, 512)]
    assert sum(computed) == sum(last - first + 1 for first, last in spans) <= 32 - 6  # buffer 0's ~8 sequences: not recomputed


def test_zero_ablation_ce_is_computed_once_per_model_layer_and_sequences(make_cfg, gemma, monkeypatch) -> None:
    from masksae.evals import shared, store
    from masksae.evals.core import zero_ablation_ce
    from masksae.resources import split_sequences

    cfg = make_cfg("debug=smoke", "eval.seed=7")
    sequences_NS = split_sequences(cfg, gemma, "validation", 2 * int(cfg.activations.context_length))
    direct = zero_ablation_ce(gemma, int(cfg.layer), sequences_NS, int(cfg.eval.core.batch_size))
    assert shared.ce_loss_zero(cfg, gemma, sequences_NS) == pytest.approx(direct, rel=1e-12) and direct > 0

    def recompute(*args: object) -> float:
        raise AssertionError("recomputed")

    monkeypatch.setattr(shared, "zero_ablation_ce", recompute)
    store._RECENT.clear()  # read back from disk, as another process would
    assert shared.ce_loss_zero(cfg, gemma, sequences_NS) == pytest.approx(direct, rel=1e-12)
    with pytest.raises(AssertionError, match="recomputed"):  # other sequences are another artifact
        shared.ce_loss_zero(cfg, gemma, sequences_NS[:1])


def test_a_sweep_pins_the_caches_of_its_submitted_points_until_it_ends(make_cfg, gemma, tmp_path, monkeypatch) -> None:
    from masksae import resources
    from masksae.launch.pins import pin_caches, unpin_caches
    from masksae.launch.plan import NEW, SKIP, Plan, Point

    cfg = make_cfg("debug=smoke", "mask_prob=0.2", "activations.cache_budget_gb=0.001")
    isolated = ActivationCache(tmp_path, budget_bytes=1_000_000)  # not the session's cache: this test evicts
    monkeypatch.setattr(resources, "activation_cache", lambda _cfg: isolated)
    points = [Point(0, [], "k0", "queued", "", action=NEW), Point(1, [], "k1", "finished", "", action=SKIP)]
    pins = pin_caches(Plan("sweep-x", "sqlite://", "e", "basic", str(tmp_path), points), [cfg, cfg])
    assert sorted(pin.spec.split for pin in pins) == ["train", "validation"]  # the skipped point pins nothing
    train = next(pin.spec for pin in pins if pin.spec.split == "train")
    assert (train.mask_prob, train.mask_token_id, train.n_tokens) == (0.2, 4, int(cfg.activations.train_tokens))
    isolated.get_or_build(train, lambda writer: writer.append(torch.zeros(1000, 8), torch.zeros(1000, dtype=torch.bool), 1), 8000,
                          d_model=8, shard_rows=1000)
    assert not isolated.make_room(999_000, "another-set")  # the queued job's set is pinned: not evicted
    assert isolated.folder(train).exists()
    unpin_caches(pins)
    assert isolated.make_room(999_000, "another-set") and not isolated.folder(train).exists()
