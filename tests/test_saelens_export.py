"""Our exported SAE folders load in SAELens (its own `SAE.load_from_disk`) and encode/decode like ours, for every architecture."""

from __future__ import annotations

import pytest
import torch

from masksae.config import compose_config
from masksae.export import run_metadata, save_sae
from masksae.saes import SAE_REGISTRY, build_sae
from tests.parts import import_or_missing

sae_lens = import_or_missing("sae_lens", "sae-lens is the optional extra: pip install -e '.[saelens]' (make install adds it)")

D_IN, D_SAE, SCALE = 64, 256, 3.7


def relative_error(theirs: torch.Tensor, ours: torch.Tensor) -> float:
    return float((theirs - ours).norm() / ours.norm())


def trained_like(architecture: str):
    """An SAE of the architecture with random (not initial) weights and thresholds, folded to raw space as a run exports it."""
    k = ["sae.k=8"] if architecture in ("topk", "batchtopk", "matryoshka_batchtopk") else []
    cfg = compose_config("train", [f"sae={architecture}", f"sae.d_sae={D_SAE}", "layer=3", "mask_prob=0.2", *k])
    sae = build_sae(cfg.sae, D_IN)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in sae.named_parameters():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * (0.3 if name.startswith("b_") else 1 / D_IN**0.5))
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(torch.rand(D_SAE, generator=generator) * 0.5 if architecture == "jumprelu" else torch.full((D_SAE,), 0.4))
    sae.after_optimizer_step()  # unit-norm decoder rows where training keeps them so (not the ReLU SAE's)
    sae.fold_activation_scale(SCALE)
    return cfg, sae.eval()


@pytest.mark.parametrize("architecture", sorted(SAE_REGISTRY))
def test_saelens_loads_our_folder_and_matches_encode_decode(architecture: str, tmp_path) -> None:
    cfg, ours = trained_like(architecture)
    folder = save_sae(ours, tmp_path / "sae", cfg.sae, run_metadata(cfg, "abc123", 4, SCALE))
    theirs = sae_lens.SAE.load_from_disk(folder)
    torch.testing.assert_close(theirs.W_dec.norm(dim=-1), torch.ones(D_SAE))  # activations are contribution norms, as SAEBench assumes
    assert theirs.cfg.metadata.hook_name == "blocks.3.hook_resid_post" and theirs.cfg.metadata.run_key == "abc123"
    assert theirs.cfg.metadata.mask_prob == 0.2 and theirs.cfg.metadata.context_size == 128
    assert theirs.cfg.metadata.model_name == cfg.model.name
    x_ND = torch.randn(512, D_IN, generator=torch.Generator().manual_seed(1)) * SCALE
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x_ND), theirs.encode(x_ND)
        active = (f_ours > 0).float().mean()
        assert 0.005 < active < 0.9  # the comparison exercises both firing and silent latents
        assert torch.equal(f_ours > 0, f_theirs > 0)
        assert relative_error(f_theirs, f_ours) < 1e-4
        assert relative_error(theirs.decode(f_ours), ours.decode(f_ours)) < 1e-4
        assert relative_error(theirs(x_ND), ours(x_ND)) < 1e-4
