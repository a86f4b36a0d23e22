"""Run key and sweep id: what changes them and what must not."""

from __future__ import annotations

from masksae.tracking import flatten, run_key, sweep_id_from_argv


def test_run_key_ignores_paths_tracking_and_eval_but_not_what_is_computed(make_cfg) -> None:
    base = run_key(make_cfg())
    assert base == run_key(make_cfg("eval.core.ce_sequences=3", "tracking.experiment=other", "paths.output_dir=/elsewhere"))
    assert base != run_key(make_cfg("mask_prob=0.2"))
    assert base != run_key(make_cfg("seed=1"))
    assert base != run_key(make_cfg("sae.k=32"))


def test_sweep_id_is_order_free_and_ignores_the_launcher() -> None:
    sweep = sweep_id_from_argv(["-m", "mask_prob=0,0.1", "sae=topk,jumprelu"])
    assert sweep == sweep_id_from_argv(["sae=topk,jumprelu", "--multirun", "mask_prob=0,0.1", "launcher=slurm", "hydra.launcher.timeout_min=60"])
    assert sweep != sweep_id_from_argv(["-m", "mask_prob=0,0.2", "sae=topk,jumprelu"])
    assert sweep != sweep_id_from_argv(["-m", "mask_prob=0,0.1", "sae=topk,jumprelu", "experiment=local_paper"])


def test_flatten_gives_dotted_params() -> None:
    assert flatten({"sae": {"k": 64, "adam_betas": [0.9, 0.999]}, "mask_prob": 0.1}) == {
        "sae.k": "64", "sae.adam_betas": "[0.9, 0.999]", "mask_prob": "0.1"}
