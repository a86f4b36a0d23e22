"""LLM activation throughput: stop-at-layer (ours) vs the full causal-LM forward with output_hidden_states."""

from __future__ import annotations

from collections.abc import Callable
from statistics import median

import torch

from bench.sae_step import time_once
from masksae.models import LoadedModel


def naive_residual(model: LoadedModel, input_ids_BS: torch.Tensor, layer: int) -> torch.Tensor:
    """What a user writes without the framework: the whole model, LM head included, every hidden state kept."""
    with torch.no_grad():
        return model.model(input_ids=input_ids_BS, output_hidden_states=True).hidden_states[layer + 1]


def compare_forwards(model: LoadedModel, input_ids_BS: torch.Tensor, layer: int, repeats: int) -> dict[str, float]:
    """Tokens/s of both ways to the layer's residual, interleaved; they must agree."""
    torch.testing.assert_close(model.residual_at(input_ids_BS, layer), naive_residual(model, input_ids_BS, layer), rtol=1e-4, atol=1e-3)
    ways: dict[str, Callable[[], object]] = {
        "stop_at_layer": lambda: model.residual_at(input_ids_BS, layer),
        "full_forward": lambda: naive_residual(model, input_ids_BS, layer),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            times[name].append(time_once(way))
    result = {f"{name}_tokens_per_s": input_ids_BS.numel() / median(t) for name, t in times.items()}
    result["ratio"] = result["stop_at_layer_tokens_per_s"] / result["full_forward_tokens_per_s"]
    return result


def stop_at_layer_tokens_per_s(model: LoadedModel, input_ids_BS: torch.Tensor, layer: int, repeats: int) -> float:
    model.residual_at(input_ids_BS, layer)
    return input_ids_BS.numel() / median(time_once(lambda: model.residual_at(input_ids_BS, layer)) for _ in range(repeats))
