"""Resuming from a mid-training checkpoint gives the weights of an uninterrupted run, bit for bit, for every architecture
and for a pack; an SAE trained in a pack ends with exactly the weights it gets alone."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from masksae.config import compose_config
from masksae.datamodule import ActivationDataModule
from masksae.module import SAETrainingModule
from masksae.saes import build_sae

D_IN = 32


def _sae_cfg(sae_name: str):
    cfg = compose_config("train", [f"sae={sae_name}", "sae.d_sae=128", "training.lr_warmup_steps=3"])
    if "k" in cfg.sae:
        cfg.sae.k = 8
    if "target_l0" in cfg.sae:
        cfg.sae.target_l0 = 8
    return cfg


def _fit(sae_names: list[str], folder: Path, stop_at: int | None = None) -> dict[str, torch.Tensor]:
    """Train SAEs side by side on seeded synthetic activations; stop after `stop_at` steps (checkpointed there) or
    resume from last.ckpt. Each SAE is seeded as the pipeline does."""
    cfgs = [_sae_cfg(name) for name in sae_names]
    acts_ND = torch.randn(4096, D_IN, generator=torch.Generator().manual_seed(1)) * 3 + 1
    data = ActivationDataModule(acts_ND, torch.zeros(4096, dtype=torch.bool), acts_ND[:256], batch_size=256, epochs=2,
                                seed=0, train_on_masked=True, scale_sample=4096)
    saes = []
    for cfg in cfgs:
        L.seed_everything(0, verbose=False)
        sae = build_sae(cfg.sae, D_IN)
        with torch.no_grad():
            sae.init_from_data(data.train_acts_ND.float() * data.scale)
        saes.append(sae)
    module = SAETrainingModule(saes, [cfg.sae for cfg in cfgs], cfgs[0].training, data.total_steps)
    last = folder / "last.ckpt"
    trainer = L.Trainer(accelerator="cpu", max_steps=stop_at or data.total_steps, max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0, every_n_train_steps=5)])
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.exists() and stop_at is None else None)
    assert trainer.global_step == (stop_at or data.total_steps)
    return {name: value.clone() for name, value in module.state_dict().items()}


@pytest.mark.parametrize("sae_names", [["topk"], ["batchtopk"], ["jumprelu"], ["relu"], ["matryoshka_batchtopk"], ["topk", "jumprelu"]])
def test_resume_from_a_mid_training_checkpoint_is_bitwise_identical(sae_names: list[str], tmp_path: Path) -> None:
    uninterrupted = _fit(sae_names, tmp_path / "whole")
    _fit(sae_names, tmp_path / "split", stop_at=15)
    resumed = _fit(sae_names, tmp_path / "split")
    assert uninterrupted.keys() == resumed.keys()
    for name, value in uninterrupted.items():
        assert torch.equal(value, resumed[name]), name


def test_each_sae_of_a_pack_trains_exactly_as_alone(tmp_path: Path) -> None:
    names = ["topk", "jumprelu", "batchtopk"]
    packed = _fit(names, tmp_path / "pack")
    for index, name in enumerate(names):
        alone = _fit([name], tmp_path / name)
        in_pack = {key: value for key, value in packed.items() if key.startswith(f"members.{index}.")}
        assert {key.replace("members.0.", f"members.{index}.", 1) for key in alone} == set(in_pack), name
        for key, value in alone.items():
            assert torch.equal(value, in_pack[key.replace("members.0.", f"members.{index}.", 1)]), (name, key)
