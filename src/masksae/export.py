"""Save and load SAEs as SAELens-style folders: `cfg.json` + `sae_weights.safetensors`, normalisation folded in."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from omegaconf import DictConfig

from masksae.config import plain
from masksae.models import hook_name
from masksae.saes import SparseAutoencoder, build_sae

WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"
# Our registry names -> SAELens inference architectures. SAELens has no inference class for (Matryoshka) BatchTopK:
# it saves them as JumpReLU, whose relu(pre) * (pre > threshold) is their inference encode with the learned threshold.
SAELENS_ARCHITECTURES = {
    "relu": "standard",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "jumprelu": "jumprelu",
    "matryoshka_batchtopk": "jumprelu",
}
EXPORTED_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
# The cfg.json layout written here is SAELens 6's (metadata nested); without this version SAELens reads the file as a
# pre-6 config and drops the metadata (hook name, model, context size).
SAELENS_FORMAT_VERSION = "6.0.0"


def sae_state(sae: SparseAutoencoder) -> dict[str, torch.Tensor]:
    """The SAELens-named tensors of an SAE (threshold only where the architecture has one)."""
    state = {}
    for name in EXPORTED_TENSORS:
        value = getattr(sae, name, None)
        if isinstance(value, torch.Tensor):
            state[name] = value.detach().float().cpu().contiguous()
    return state


def run_metadata(cfg: DictConfig, key: str, mask_token_id: int, scale: float) -> dict[str, Any]:
    """cfg.json metadata of a training run's SAE: SAELens's hook and model fields, our mask rate, run key and folded scale."""
    return {
        "model_name": cfg.model.name, "hf_id": cfg.model.get("hf_id"), "hook_name": hook_name(int(cfg.layer)),
        "hook_layer": int(cfg.layer), "context_size": int(cfg.activations.context_length), "mask_prob": float(cfg.mask_prob),
        "mask_token_id": mask_token_id, "run_key": key, "activation_scale_folded": scale,
    }


def save_sae(sae: SparseAutoencoder, folder: Path, sae_cfg: Mapping[str, Any], metadata: Mapping[str, Any]) -> Path:
    """Write the SAE (already folded to raw activation space) atomically into `folder`."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    config = {
        "architecture": SAELENS_ARCHITECTURES[sae.architecture],
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": SAELENS_FORMAT_VERSION, **metadata, "masksae_sae_config": plain(sae_cfg)},
    }
    if "k" in sae_cfg and sae_cfg.get("k") is not None:
        config["k"] = int(sae_cfg["k"])
    save_file(sae_state(sae), staging / WEIGHTS_FILE)
    (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return folder


def load_sae(folder: str | Path) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """An SAE saved by `save_sae`, on CPU in eval mode, and its cfg.json."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    sae = build_sae(config["metadata"]["masksae_sae_config"], config["d_in"])
    tensors = load_file(folder / WEIGHTS_FILE)
    with torch.no_grad():
        for name, value in tensors.items():
            getattr(sae, name).copy_(value)
    return sae.eval(), config
