"""Null settings that follow from others: the learning rate from the SAE's width, the dead-latent window from the run's
length; set values are kept, and the defaults key as the values they resolve to."""

from __future__ import annotations

import pytest

from masksae.auto_settings import with_auto_settings
from masksae.config import compose_config
from masksae.errors import ConfigError
from masksae.tracking import run_key


@pytest.mark.parametrize(("d_sae", "lr"), [(4096, 4e-4), (16384, 2e-4), (65536, 1e-4)])
def test_a_null_learning_rate_scales_as_one_over_the_square_root_of_the_width(d_sae: int, lr: float) -> None:
    assert with_auto_settings(compose_config("train", [f"sae.d_sae={d_sae}"])).sae.lr == pytest.approx(lr)


def test_the_dead_window_is_a_quarter_of_the_run_capped_at_10m_tokens() -> None:
    assert with_auto_settings(compose_config("train")).training.dead_after_tokens == 200_000  # 2 epochs of 400k
    assert with_auto_settings(compose_config("train", ["activations.train_tokens=100000000"])).training.dead_after_tokens == 10_000_000
    paper = with_auto_settings(compose_config("train", ["experiment=pythia_sweep"]))
    assert paper.training.dead_after_tokens == 10_000_000 and paper.sae.lr < 4e-4


def test_set_values_are_kept_and_defaults_key_as_their_values() -> None:
    chosen = with_auto_settings(compose_config("train", ["sae.lr=0.001", "training.dead_after_tokens=5000"]))
    assert (chosen.sae.lr, chosen.training.dead_after_tokens) == (0.001, 5000)
    assert run_key(compose_config("train")) == run_key(compose_config("train", ["sae.lr=0.0004", "training.dead_after_tokens=200000"]))


def test_a_bad_dead_window_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="training.dead_after_tokens"):
        with_auto_settings(compose_config("train", ["training.dead_after_tokens=-3"]))
