"""Where the Hydra configs live, composing them from Python, and plain-dict copies of config groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def compose_config(name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """The config `name` (train, evaluate) with command-line style overrides, as the CLI would build it; also from
    inside a running Hydra app (`python -m evaluate sae_path=` composes the training config), whose state is restored."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    outer_app = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(name, overrides=list(overrides))
    finally:  # the context put back a copy of the cleared instance: GlobalHydra.instance() is asked again
        if outer_app is not None:
            GlobalHydra.instance().initialize(outer_app)


def model_named(name: str) -> str:
    """The conf/model group of a model called `name` by its group, its `name` or its Hugging Face id (with or without
    the owner), as SAE folders from other tools name it; ValueError listing the known ones."""
    known = {}
    for path in sorted(Path(CONF_DIR, "model").glob("*.yaml")):
        model = OmegaConf.load(path)
        hf_id = str(model.get("hf_id") or "")
        for alias in (path.stem, str(model.name), hf_id, hf_id.rsplit("/", 1)[-1]):
            known.setdefault(alias.lower(), path.stem)
    known.pop("", None)
    if name.lower() not in known:
        raise ValueError(f"{name!r} is none of the configured models ({', '.join(sorted(set(known.values())))})")
    return known[name.lower()]


def plain(group: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved, JSON-ready copy of a config group (OmegaConf containers become dicts and lists)."""
    return OmegaConf.to_container(group, resolve=True) if isinstance(group, DictConfig) else dict(group)
