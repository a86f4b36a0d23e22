"""The core eval's CE / KL splice on the real gemma-3-270m: the cached clean reference gives the metrics of rerunning
the clean model for every SAE, runs no block at or below the hook per SAE, and is computed once per sequences."""

from __future__ import annotations

import pytest
import torch

from masksae.config import plain
from masksae.evals import shared, store
from masksae.evals.core import ce_metrics, ce_metrics_from_reference
from masksae.resources import split_sequences
from masksae.saes import build_sae


@pytest.fixture(scope="module")
def setting(make_cfg, gemma):
    cfg = make_cfg("debug=smoke", "eval.seed=3")
    sequences_NS = split_sequences(cfg, gemma, "validation", 3 * int(cfg.activations.context_length))
    return cfg, sequences_NS


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_the_cached_reference_gives_the_metrics_of_two_full_forwards(setting, make_cfg, gemma, architecture: str) -> None:
    cfg, sequences_NS = setting
    torch.manual_seed(0)
    sae = build_sae(plain(make_cfg("debug=smoke", f"sae={architecture}").sae), gemma.d_model).eval()
    sae.fold_activation_scale(1 / 60.0)  # raw activations of this layer have norms ~ 60 * sqrt(d_model) / 25
    layer, batch = int(cfg.layer), 2
    direct = ce_metrics(gemma, sae, layer, sequences_NS, batch, ce_loss_zero=9.0)
    reference = shared.core_reference(cfg, gemma, sequences_NS)
    calls = [0] * gemma.n_layers
    handles = [block.register_forward_pre_hook(lambda _m, _i, index=index: calls.__setitem__(index, calls[index] + 1))
               for index, block in enumerate(gemma.blocks)]
    try:
        spliced = ce_metrics_from_reference(gemma, sae, layer, sequences_NS, batch, reference, ce_loss_zero=9.0)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [0] * (layer + 1) + [2] * (gemma.n_layers - layer - 1)  # 3 sequences, 2 a forward: the blocks above, twice
    # the reference's clean side is float64, the direct path float32 (its CE off by ~7e-6 relative)
    assert spliced["ce_loss_clean"] == pytest.approx(direct["ce_loss_clean"], rel=2e-5)
    assert spliced["ce_loss_sae"] == pytest.approx(direct["ce_loss_sae"], rel=1e-5)
    assert spliced["ce_loss_recovered"] == pytest.approx(direct["ce_loss_recovered"], abs=1e-4)
    assert direct["kl_div"] > 0.01 and spliced["kl_div"] == pytest.approx(direct["kl_div"], rel=1e-4, abs=1e-5)


def test_the_reference_of_a_perfect_splice_gives_zero_kl_and_the_clean_ce(setting, gemma) -> None:
    """An SAE that returns its input exactly: KL must cancel to ~0 (it is a difference of terms of size ~CE)."""
    cfg, sequences_NS = setting
    reference = shared.core_reference(cfg, gemma, sequences_NS)

    class Identity(torch.nn.Module):
        def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
            return x_BSD

    metrics = ce_metrics_from_reference(gemma, Identity(), int(cfg.layer), sequences_NS, 1, reference, ce_loss_zero=9.0)
    assert metrics["kl_div"] == pytest.approx(0.0, abs=2e-5)
    assert metrics["ce_loss_sae"] == pytest.approx(metrics["ce_loss_clean"], rel=1e-5) and metrics["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-5)


def test_the_reference_is_computed_once_per_model_layer_and_sequences(setting, gemma, monkeypatch) -> None:
    cfg, sequences_NS = setting
    built = shared.core_reference(cfg, gemma, sequences_NS)

    def recompute(*args: object) -> None:
        raise AssertionError("recomputed")

    monkeypatch.setattr(shared, "clean_reference", recompute)
    store._RECENT.clear()  # read back from disk, as another process would
    again = shared.core_reference(cfg, gemma, sequences_NS)
    assert torch.equal(again.resid_NSD, built.resid_NSD) and torch.equal(again.mean_unembed_TD, built.mean_unembed_TD)
    with pytest.raises(AssertionError, match="recomputed"):  # other sequences are another artifact
        shared.core_reference(cfg, gemma, sequences_NS[:1])
