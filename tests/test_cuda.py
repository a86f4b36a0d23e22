"""The CUDA path (skipped on machines without a GPU, where nothing can stand in for one; `make gpu-check` runs the
whole GPU path): LLM activations on the GPU agree with the CPU's in fp32 and bf16, and an SAE trains there."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_llm_activations_on_the_gpu_agree_with_the_cpu(make_cfg, gemma, dtype: str) -> None:
    from masksae.config import plain
    from masksae.models import load_model
    from masksae.resources import cache_root, split_sequences

    cfg = make_cfg()
    on_gpu = load_model({**plain(cfg.model), "dtype": dtype}, cache_root(cfg), "cuda")
    ids_BS = split_sequences(cfg, gemma, "validation", 4 * int(cfg.activations.context_length))[:4]
    cpu_BSD = gemma.residual_at(ids_BS, int(cfg.layer)).float()
    gpu_BSD = on_gpu.residual_at(ids_BS, int(cfg.layer)).float().cpu()
    relative = ((gpu_BSD - cpu_BSD).norm(dim=-1) / cpu_BSD.norm(dim=-1)).median()
    assert relative < (1e-3 if dtype == "float32" else 5e-2)


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_an_sae_trains_on_the_gpu(architecture: str) -> None:
    from bench.sae_step import our_sae, our_step

    x_BD = torch.randn(1024, 64, generator=torch.Generator().manual_seed(0))
    sae = our_sae(architecture, 64, 512, 16, x_BD).cuda()
    x_BD = x_BD.cuda()
    before = float(sae.training_loss(x_BD, dead_mask_F=None).loss)
    step = our_step(sae, x_BD, lr=1e-3)
    for _ in range(50):
        step()
    assert float(sae.training_loss(x_BD, dead_mask_F=None).loss) < before
