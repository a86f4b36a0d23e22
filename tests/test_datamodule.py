"""DataModule: normalisation to E||x||^2 = d_in, seeded and resumable batch order, masked-position dropping."""

from __future__ import annotations

import torch

from masksae.datamodule import ActivationDataModule, ResumableStepSampler, StepBatches, StreamedBatches, StreamingDataModule, estimate_scale


def _acts(n: int = 5000, d: int = 16) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0)) * 37.0 + 5.0


def test_scale_normalises_mean_squared_norm_to_d_in() -> None:
    acts_ND = _acts()
    scale = estimate_scale(acts_ND, n_sample=5000, seed=0)
    assert abs((acts_ND * scale).pow(2).sum(1).mean().item() - 16.0) < 1e-3


def test_batches_are_seeded_and_cover_each_epoch_once() -> None:
    acts_ND = torch.arange(1000, dtype=torch.float32).unsqueeze(1)
    batches = StepBatches(acts_ND, batch_size=100, seed=3, scale=1.0)
    epoch0 = torch.cat([batches[step] for step in range(10)]).flatten()
    assert sorted(epoch0.tolist()) == list(range(1000))
    assert not torch.equal(epoch0, torch.arange(1000, dtype=torch.float32))
    again = StepBatches(acts_ND, batch_size=100, seed=3, scale=1.0)
    assert torch.equal(torch.cat([again[step] for step in range(10)]).flatten(), epoch0)
    epoch1 = torch.cat([batches[step] for step in range(10, 20)]).flatten()
    assert not torch.equal(epoch1, epoch0)
    other_seed = StepBatches(acts_ND, batch_size=100, seed=4, scale=1.0)
    assert not torch.equal(other_seed[0], batches[0])


def test_sampler_resumes_from_the_current_step() -> None:
    state = {"step": 0}
    sampler = ResumableStepSampler(12, lambda: state["step"])
    assert list(sampler) == list(range(12))
    state["step"] = 7
    assert list(sampler) == list(range(7, 12))


def test_masked_positions_can_be_dropped_from_training() -> None:
    acts_ND = _acts(1000)
    masked_N = torch.zeros(1000, dtype=torch.bool)
    masked_N[::4] = True
    common = dict(batch_size=50, epochs=2, seed=0, scale_sample=1000)
    kept = ActivationDataModule(acts_ND, masked_N, acts_ND[:100], train_on_masked=True, **common)
    dropped = ActivationDataModule(acts_ND, masked_N, acts_ND[:100], train_on_masked=False, **common)
    assert kept.train_acts_ND.shape[0] == 1000
    assert dropped.train_acts_ND.shape[0] == 750
    assert torch.equal(dropped.train_acts_ND, acts_ND[~masked_N])
    assert (kept.total_steps, dropped.total_steps) == (40, 30)


class CountingStream:
    """An ActivationStream of rows 0..n-1 (row i is [i, ...]), in chunks of 70, order seeded by the epoch."""

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows
        self.epochs_started: list[int] = []

    def epoch_chunks(self, epoch: int):
        self.epochs_started.append(epoch)
        order_N = torch.randperm(self.n_rows, generator=torch.Generator().manual_seed(epoch))
        yield from order_N.float().unsqueeze(1).repeat(1, 3).split(70)


def test_streamed_batches_cover_each_epoch_once_and_resume_where_they_stopped() -> None:
    stream = CountingStream(1030)
    state = {"step": 0}
    batches = StreamedBatches(stream, batch_size=100, total_steps=25, start_step=lambda: state["step"], seed=1, scale=2.0, buffer_rows=300)
    steps = list(batches)
    assert len(steps) == 25 and all(b.shape == (100, 3) for b in steps)
    for epoch in (0, 1):
        rows = torch.cat(steps[10 * epoch : 10 * epoch + 10])[:, 0] / 2.0
        assert len(set(rows.tolist())) == 1000 and rows.max() < 1030  # 10 full batches of distinct rows
    assert not torch.equal(steps[0], steps[10])
    state["step"] = 17
    assert all(torch.equal(a, b) for a, b in zip(list(batches), steps[17:], strict=True))


def test_streaming_datamodule_counts_steps_and_samples_without_a_full_pass() -> None:
    stream = CountingStream(5000)
    data = StreamingDataModule(stream, _acts(100, 3), batch_size=256, epochs=2, seed=0, scale_sample=500, buffer_rows=1024)
    assert (data.n_rows, data.total_steps) == (5000, 2 * (5000 // 256))
    assert data.sample_ND.shape == (500, 3) and stream.epochs_started == [0]
    expected = (3 / data.sample_ND.pow(2).sum(1).mean()).sqrt().item()
    assert abs(data.scale - expected) < 1e-6 * expected
    first = next(iter(data.train_dataloader()))
    assert first.shape == (256, 3)
