"""Where the Hydra configs live, composing them from Python, and plain-dict copies of config groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def compose_config(name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """The config `name` (train, evaluate) with command-line style overrides, as the CLI would build it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides))


def plain(group: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved, JSON-ready copy of a config group (OmegaConf containers become dicts and lists)."""
    return OmegaConf.to_container(group, resolve=True) if isinstance(group, DictConfig) else dict(group)
