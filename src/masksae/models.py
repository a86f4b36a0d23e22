"""Language models: load (offline GGUF package, local GGUF file, or Hugging Face hub), hook a layer, stop there."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from masksae.errors import ConfigError, OfflineError
from masksae.locks import exclusive_lock
from masksae.progress import duration

log = logging.getLogger(__name__)

MODEL_SOURCES = ("gguf_package", "gguf_pip_file", "hub")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class _StopForward(Exception):
    """Raised from a hook to end a forward pass once the hooked layer has run."""


class _SkippedBlock(nn.Module):
    """Stands in for a decoder block that is not run: returns `resid_BSD` (the residual after it), or its input."""

    def __init__(self, resid_BSD: torch.Tensor | None) -> None:
        super().__init__()
        self.resid_BSD = resid_BSD

    def forward(self, hidden_states: torch.Tensor, *_args: Any, **_kwargs: Any) -> torch.Tensor:
        return hidden_states if self.resid_BSD is None else self.resid_BSD


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and the decoder-block list that layer indices refer to."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    blocks: nn.ModuleList

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def special_ids(self) -> torch.Tensor:
        """Ids of BOS, EOS, PAD and every other special token of the tokenizer."""
        return torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)

    @torch.inference_mode()
    def residual_at(self, input_ids_BS: torch.Tensor, layer: int) -> torch.Tensor:
        """Output of decoder block `layer` (hidden_states[layer + 1]), running only the blocks up to it."""
        captured: dict[str, torch.Tensor] = {}

        def capture(_module: nn.Module, _inputs: Any, output: Any) -> None:
            captured["resid_BSD"] = output[0] if isinstance(output, tuple) else output
            raise _StopForward

        handle = self.blocks[layer].register_forward_hook(capture)
        try:
            self.base_model(input_ids=input_ids_BS.to(self.device), use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured["resid_BSD"]

    @property
    def base_model(self) -> nn.Module:
        """The transformer without the LM head (runs embeddings and blocks)."""
        return self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model

    @contextlib.contextmanager
    def replaced_residual(
        self, layer: int, replace: Callable[[torch.Tensor], torch.Tensor]
    ) -> Iterator[None]:
        """Within the block, the output of block `layer` is passed through `replace` (for splicing an SAE in)."""

        def splice(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (replace(output[0]), *output[1:])
            return replace(output)

        handle = self.blocks[layer].register_forward_hook(splice)
        try:
            yield
        finally:
            handle.remove()


    @contextlib.contextmanager
    def starting_after(self, layer: int, resid_BSD: torch.Tensor) -> Iterator[None]:
        """Within the block, a forward runs only the blocks above `layer` (and the head): blocks 0..layer are not run
        and block `layer` outputs `resid_BSD`, e.g. a cached residual with an SAE spliced in. Decoder blocks return a
        tensor in the pinned transformers (5.x), so the stand-ins do too."""
        originals = [self.blocks[index] for index in range(layer + 1)]
        for index in range(layer + 1):
            self.blocks[index] = _SkippedBlock(resid_BSD if index == layer else None)
        try:
            yield
        finally:
            for index, block in enumerate(originals):
                self.blocks[index] = block

    @property
    def unembedding(self) -> nn.Linear | None:
        """The LM head when logits are exactly `head(final hidden state)` in float32 (a bias-free linear map, no
        soft-capping as in Gemma-2, no bf16 rounding of the logits), else None."""
        head = self.model.get_output_embeddings()
        capped = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        exact = isinstance(head, nn.Linear) and head.bias is None and head.weight.dtype == torch.float32
        return head if exact and capped is None else None


def hook_name(layer: int) -> str:
    """SAELens/TransformerLens name of the residual stream after block `layer`."""
    return f"blocks.{layer}.hook_resid_post"


def find_blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The list of decoder blocks (Gemma/Llama `model.layers`, GPT-NeoX `gpt_neox.layers`, GPT-2 `h`)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    for attribute in ("layers", "h", "blocks"):
        blocks = getattr(decoder, attribute, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise TypeError(f"cannot find the decoder blocks of {type(model).__name__}")


def validate_model_config(model_cfg: Mapping[str, Any], layer: object) -> None:
    """Cheap checks of the model group and the layer before anything is loaded."""
    source = model_cfg.get("source")
    if source not in MODEL_SOURCES:
        raise ConfigError("model.source", source, f"one of {', '.join(MODEL_SOURCES)}")
    if model_cfg.get("dtype") not in DTYPES:
        raise ConfigError("model.dtype", model_cfg.get("dtype"), f"one of {', '.join(DTYPES)}")
    n_layers = int(model_cfg["n_layers"])
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ConfigError("layer", layer, f"an integer block index in [0, {n_layers - 1}] for model {model_cfg['name']}")
    if source == "hub":
        ensure_hub_model_available(model_cfg)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def ensure_hub_model_available(model_cfg: Mapping[str, Any]) -> None:
    """Fail fast with a clear message when a hub model is neither cached nor reachable."""
    from huggingface_hub import model_info, try_to_load_from_cache

    repo_id = model_cfg["hf_id"]
    revision = model_cfg.get("revision")
    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(cached, str):
        return
    advice = (
        f"model {model_cfg['name']} ({repo_id}) is not in the Hugging Face cache "
        f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) and the hub cannot be reached; "
        f"on a machine with network run `make prefetch MODEL={model_cfg['name']}` and share HF_HOME, "
        "or use the offline default model=gemma3-270m"
    )
    if _hub_offline():
        raise OfflineError(advice)
    try:
        model_info(repo_id, revision=revision, timeout=10)
    except Exception as error:  # any failure to reach the hub means the same thing to the user
        raise OfflineError(f"{advice} ({type(error).__name__})") from None


def _gguf_file(model_cfg: Mapping[str, Any], cache_root: Path) -> Path:
    """Path of the model's GGUF file, assembled from its PyPI package when needed."""
    package = model_cfg["package"]
    if model_cfg["source"] == "gguf_package":
        module = importlib.import_module(package)
        target = cache_root / "gguf" / model_cfg["gguf_file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(module.assemble(target))
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model.name", model_cfg["name"], f"needs the optional package {package}: run `make install-extra-models`")
    return Path(spec.submodule_search_locations[0]) / model_cfg["gguf_file"]


def converted_model_dir(model_cfg: Mapping[str, Any], cache_root: Path) -> Path:
    """A safetensors copy of a GGUF model, built once per machine (atomically, under a lock)."""
    target = cache_root / "models" / model_cfg["name"]
    if (target / "model.safetensors").exists() and (target / "tokenizer_config.json").exists():
        return target
    with exclusive_lock(cache_root / "models" / f".{model_cfg['name']}.lock"):
        if (target / "model.safetensors").exists() and (target / "tokenizer_config.json").exists():
            return target
        started = time.perf_counter()
        log.info("model conversion (%s, once per machine): 1/3 assembling the GGUF file", model_cfg["name"])
        gguf_path = _gguf_file(model_cfg, cache_root)
        log.info("model conversion: 2/3 de-quantizing %s (%.0f MB), %s so far", gguf_path.name, gguf_path.stat().st_size / 1e6,
                 duration(time.perf_counter() - started))
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
        config = quantized.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict())
        log.info("model conversion: 3/3 saving safetensors to %s, %s so far", target, duration(time.perf_counter() - started))
        staging = Path(tempfile.mkdtemp(prefix=f".{model_cfg['name']}-", dir=target.parent))
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        log.info("model conversion: done in %s", duration(time.perf_counter() - started))
    return target


def load_model(model_cfg: Mapping[str, Any], cache_root: Path, device: str = "cpu") -> LoadedModel:
    """Load the configured model and tokenizer in eval mode, in the configured dtype, on `device`."""
    dtype = DTYPES[model_cfg["dtype"]]
    if device == "cpu":
        torch.set_flush_denormal(True)
    if model_cfg["source"] == "hub":
        ensure_hub_model_available(model_cfg)
        location, revision = model_cfg["hf_id"], model_cfg.get("revision")
    else:
        location, revision = str(converted_model_dir(model_cfg, cache_root)), None
    tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(location, revision=revision, dtype=dtype).to(device).eval()
    model.requires_grad_(False)
    return LoadedModel(name=model_cfg["name"], model=model, tokenizer=tokenizer, blocks=find_blocks(model))
