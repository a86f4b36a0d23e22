"""The LLM side: stop-at-layer activations equal the full model's residual; hub models fail clearly offline."""

from __future__ import annotations

import pytest
import torch

from masksae.errors import ConfigError, OfflineError
from masksae.models import validate_model_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("layer", [0, 6, 16])
def test_stop_at_layer_equals_full_residual(gemma, layer: int) -> None:
    ids_BS = gemma.tokenizer(["The Eiffel Tower is in Paris.", "Sparse autoencoders find features."], return_tensors="pt", padding=True).input_ids
    resid_BSD = gemma.residual_at(ids_BS, layer)
    with torch.inference_mode():
        hidden = gemma.model(input_ids=ids_BS, output_hidden_states=True).hidden_states
    assert resid_BSD.shape == (2, ids_BS.shape[1], gemma.d_model)
    torch.testing.assert_close(resid_BSD, hidden[layer + 1], rtol=1e-5, atol=1e-3)


def test_real_model_predicts_france(gemma) -> None:
    ids = gemma.tokenizer("The Eiffel Tower is in Paris. Paris is the capital of", return_tensors="pt").input_ids
    with torch.inference_mode():
        next_id = gemma.model(input_ids=ids).logits[0, -1].argmax()
    assert gemma.tokenizer.decode(next_id).strip() == "France"


def test_hub_model_offline_fails_with_a_clear_message(make_cfg, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = make_cfg("model=pythia-160m-deduped")
    with pytest.raises(OfflineError, match=r"pythia-160m-deduped \(EleutherAI/pythia-160m-deduped\) is not in the Hugging Face cache.*make prefetch"):
        validate_model_config(cfg.model, cfg.layer)


@pytest.mark.parametrize("layer", [-1, 18, 100, "6"])
def test_layer_outside_the_model_is_rejected(make_cfg, layer) -> None:
    cfg = make_cfg()
    with pytest.raises(ConfigError, match=r"layer=.*\[0, 17\] for model gemma3-270m"):
        validate_model_config(cfg.model, layer)
