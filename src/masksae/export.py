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

from masksae.config import compose_config, plain
from masksae.errors import ConfigError
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


# SAELens inference architectures -> ours, for folders SAELens (or another tool in its format) saved.
FROM_SAELENS_ARCHITECTURES = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}


def saelens_sae_config(config: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """Our SAE config for a SAELens cfg.json without ours in its metadata: the architecture's defaults at its size.
    ConfigError (key sae_path) for what our encode would not reproduce."""
    architecture = FROM_SAELENS_ARCHITECTURES.get(str(config.get("architecture", "standard")))
    if architecture is None:
        raise ConfigError("sae_path", str(folder), f"a SAELens SAE of architecture {' / '.join(FROM_SAELENS_ARCHITECTURES)} "
                          f"(its cfg.json says {config.get('architecture')!r})")
    for key in ("normalize_activations", "reshape_activations"):
        if str(config.get(key) or "none") != "none":
            raise ConfigError("sae_path", str(folder), f"an SAE with {key} 'none' (its cfg.json says {config[key]!r})")
    if config.get("rescale_acts_by_decoder_norm"):
        raise ConfigError("sae_path", str(folder), "an SAE with rescale_acts_by_decoder_norm false (its cfg.json says true)")
    overrides = [f"sae={architecture}", f"sae.d_sae={int(config['d_sae'])}"]
    if architecture == "topk":
        overrides.append(f"sae.k={int(config['k'])}")
    return plain(compose_config("train", overrides).sae)


def load_sae(folder: str | Path) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """An SAE saved by `save_sae` or by SAELens (standard, TopK, JumpReLU), on CPU in eval mode, and its cfg.json."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    metadata = config.get("metadata") or {}
    sae = build_sae(metadata.get("masksae_sae_config") or saelens_sae_config(config, folder), config["d_in"])
    tensors = load_file(folder / WEIGHTS_FILE)
    if "log_threshold" in tensors:  # SAELens before 6 kept JumpReLU thresholds as logs
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    if not config.get("apply_b_dec_to_input", True):  # x @ W_enc + b_enc == (x - b_dec) @ W_enc + (b_enc + b_dec @ W_enc)
        tensors["b_enc"] = tensors["b_enc"] + tensors["b_dec"] @ tensors["W_enc"]
    with torch.no_grad():
        for name, value in tensors.items():
            getattr(sae, name).copy_(value)
    return sae.eval(), config
