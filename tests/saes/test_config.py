"""The SAE registry, the shipped conf/sae/*.yaml files and config validation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from masksae.errors import ConfigError
from masksae.saes import SAE_REGISTRY, SparseAutoencoder, build_sae, resolve_d_sae, validate_sae_config

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "sae"
ARCHITECTURES = ["relu", "topk", "batchtopk", "jumprelu", "matryoshka_batchtopk"]
D_IN = 64


def shipped(name: str, **overrides: Any) -> DictConfig:
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def test_registry_holds_every_architecture() -> None:
    assert sorted(SAE_REGISTRY) == sorted(ARCHITECTURES)
    for name, cls in SAE_REGISTRY.items():
        assert issubclass(cls, SparseAutoencoder) and cls.architecture == name


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_shipped_yaml_loads_and_builds(name: str) -> None:
    cfg = shipped(name)
    assert cfg.architecture == name and cfg.d_sae == 4096 and cfg.expansion_factor is None
    assert cfg.lr is None and len(cfg.adam_betas) == 2 and cfg.adam_eps > 0  # null: from d_sae (auto_settings)
    sae = build_sae(cfg, D_IN)
    assert type(sae) is SAE_REGISTRY[name] and (sae.d_in, sae.d_sae) == (D_IN, 4096)
    assert build_sae(OmegaConf.to_container(cfg), D_IN).d_sae == 4096  # plain dicts work too


def test_expansion_factor_overrides_d_sae() -> None:
    assert resolve_d_sae(shipped("topk", expansion_factor=2), D_IN) == 2 * D_IN
    assert resolve_d_sae(shipped("topk", expansion_factor=0.5), D_IN) == D_IN // 2
    assert build_sae(shipped("topk", expansion_factor=4, k=8), D_IN).d_sae == 4 * D_IN


@pytest.mark.parametrize(
    ("name", "overrides", "key", "value"),
    [
        ("topk", {"architecture": "gated"}, "sae.architecture", "gated"),
        ("topk", {"d_sae": 0}, "sae.d_sae", 0),
        ("topk", {"d_sae": 64.5}, "sae.d_sae", 64.5),
        ("topk", {"expansion_factor": 0.01}, "sae.expansion_factor", 0.01),
        ("topk", {"expansion_factor": -2}, "sae.expansion_factor", -2),
        ("topk", {"k": 0}, "sae.k", 0),
        ("batchtopk", {"k": 5000}, "sae.k", 5000),
        ("matryoshka_batchtopk", {"k": 8.0}, "sae.k", 8.0),
        ("topk", {"aux_k": 0}, "sae.aux_k", 0),
        ("topk", {"aux_coeff": -1.0}, "sae.aux_coeff", -1.0),
        ("relu", {"lr": 0.0}, "sae.lr", 0.0),
        ("relu", {"lr": "fast"}, "sae.lr", "fast"),
        ("relu", {"adam_betas": [0.9]}, "sae.adam_betas", [0.9]),
        ("relu", {"adam_eps": 0}, "sae.adam_eps", 0),
        ("relu", {"l1_coeff": -5.0}, "sae.l1_coeff", -5.0),
        ("jumprelu", {"bandwidth": 0.0}, "sae.bandwidth", 0.0),
        ("jumprelu", {"target_l0": 0}, "sae.target_l0", 0),
        ("jumprelu", {"target_l0": 10_000}, "sae.target_l0", 10_000),
        ("jumprelu", {"sparsity_coeff": -1.0}, "sae.sparsity_coeff", -1.0),
        ("batchtopk", {"threshold_beta": 1.0}, "sae.threshold_beta", 1.0),
        ("matryoshka_batchtopk", {"group_fractions": [0.5, 0.25]}, "sae.group_fractions", [0.5, 0.25]),
        ("matryoshka_batchtopk", {"group_fractions": [1e-4, 0.9999]}, "sae.group_fractions", [1e-4, 0.9999]),
        ("matryoshka_batchtopk", {"group_weights": [1.0, 1.0]}, "sae.group_weights", [1.0, 1.0]),
    ],
)
def test_validation_names_key_and_value(name: str, overrides: dict[str, Any], key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_sae_config(shipped(name, **overrides), D_IN)
    error = info.value
    assert error.key == key
    assert error.value == value or list(error.value) == value
    assert key in str(error) and str(value) in str(error)


def test_unknown_architecture_lists_the_allowed_names() -> None:
    with pytest.raises(ConfigError, match="batchtopk.*jumprelu.*matryoshka_batchtopk.*relu.*topk"):
        validate_sae_config(shipped("topk", architecture="gated"), D_IN)


def test_k_error_states_the_bound() -> None:
    with pytest.raises(ConfigError, match=r"sae\.k=0.*1 <= k <= d_sae \(4096\)"):
        build_sae(shipped("topk", k=0), D_IN)


def test_validation_is_cheap() -> None:
    start = time.perf_counter()
    validate_sae_config(shipped("topk", d_sae=10**9), D_IN)  # building this would need terabytes
    assert time.perf_counter() - start < 1.0
