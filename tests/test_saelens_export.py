"""Our exported SAE folders load in SAELens (its own `SAE.load_from_disk`) and encode/decode like ours, for every architecture;
folders SAELens itself saved load in ours and encode/decode like SAELens."""

from __future__ import annotations

import pytest
import torch

from masksae.config import compose_config
from masksae.errors import ConfigError
from masksae.export import load_sae, run_metadata, save_sae
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


SAELENS_SAVED = [("standard", {}), ("standard", {"apply_b_dec_to_input": False}), ("topk", {"k": 8}), ("jumprelu", {})]


def saelens_saved(tmp_path, architecture: str, extra: dict) -> tuple:
    """A SAELens SAE of the architecture with random weights (thresholds where it has them), saved by SAELens itself."""
    metadata = sae_lens.saes.sae.SAEMetadata(model_name="google/gemma-3-270m", hook_name="blocks.6.hook_resid_post", context_size=128)
    config_class = {"standard": sae_lens.StandardSAEConfig, "topk": sae_lens.TopKSAEConfig, "jumprelu": sae_lens.JumpReLUSAEConfig}
    theirs = sae_lens.SAE.from_dict({**config_class[architecture](d_in=D_IN, d_sae=D_SAE, metadata=metadata, **extra).to_dict()})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in theirs.named_parameters():
            tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 if name == "threshold"
                         else torch.randn(tensor.shape, generator=generator) * (0.3 if name.startswith("b_") else 1 / D_IN**0.5))
    theirs.save_model(tmp_path / "saelens")
    return theirs.eval(), tmp_path / "saelens"


@pytest.mark.parametrize(("architecture", "extra"), SAELENS_SAVED, ids=[f"{a}{'-' + '-'.join(e) if e else ''}" for a, e in SAELENS_SAVED])
def test_a_folder_saelens_saved_loads_in_ours_and_matches_its_encode_decode(architecture: str, extra: dict, tmp_path) -> None:
    theirs, folder = saelens_saved(tmp_path, architecture, extra)
    ours, config = load_sae(folder)
    assert config["metadata"]["model_name"] == "google/gemma-3-270m" and ours.d_sae == D_SAE
    x_ND = torch.randn(512, D_IN, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x_ND), theirs.encode(x_ND)
        assert 0.005 < (f_theirs > 0).float().mean() < 0.9
        assert torch.equal(f_ours > 0, f_theirs > 0)
        assert relative_error(f_ours, f_theirs) < 1e-4
        assert relative_error(ours.decode(f_theirs), theirs.decode(f_theirs)) < 1e-4


def test_a_saelens_folder_ours_cannot_reproduce_is_refused(tmp_path) -> None:
    _, folder = saelens_saved(tmp_path, "topk", {"k": 8, "rescale_acts_by_decoder_norm": True})
    with pytest.raises(ConfigError, match="rescale_acts_by_decoder_norm false"):
        load_sae(folder)
