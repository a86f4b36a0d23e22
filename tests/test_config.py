"""Composing configs from Python: on its own, and from inside a running Hydra app (whose state is left as it was)."""

from __future__ import annotations

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from masksae.config import CONF_DIR, compose_config, model_named


def test_compose_config_inside_a_running_hydra_app_leaves_the_app_as_it_was() -> None:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        app = GlobalHydra.instance().hydra
        assert compose_config("train", ["layer=3"]).layer == 3
        assert GlobalHydra.instance().hydra is app
    assert not GlobalHydra.instance().is_initialized()
    assert compose_config("train", ["layer=4"]).layer == 4


@pytest.mark.parametrize("name", ["gemma3-270m", "google/gemma-3-270m", "gemma-3-270m", "Google/Gemma-3-270M"])
def test_a_model_is_found_by_its_group_or_hugging_face_id(name: str) -> None:
    assert model_named(name) == "gemma3-270m"


def test_an_unknown_model_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'gpt2' is none of the configured models \(gemma-2-2b, gemma3-270m, pythia-160m-deduped\)"):
        model_named("gpt2")
