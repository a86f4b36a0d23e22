"""`make gpu-check`: the CUDA path end to end on one GPU in at most ~5 minutes; any error fails it loudly (exit 1).

1. The smoke grid on CUDA through `python -m train -m`: fp32 and bf16 LLM x TopK/JumpReLU, the two SAEs of each
   dtype trained as one pack, every eval, logged to a scratch MLflow store; every run must end FINISHED with metrics.
2. TopK and JumpReLU training steps at d_sae 65,536 (batch 4096, d_in of the default model), fp32 SAE on the GPU:
   tokens/s and peak GPU memory.
Prints one JSON line per result and a final summary; writes bench/gpu_check.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
D_SAE, K, BATCH, STEPS = 65_536, 64, 4096, 30
SMOKE = ["debug=smoke", "model.dtype=float32,bfloat16", "sae=topk,jumprelu", "hydra.sweeper.pack_size=2", "mask_prob=0.1",
         "eval=fast", "tracking.experiment=gpu-check"]


def fail(message: str) -> None:
    print(f"[gpu-check] FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def smoke_grid(workdir: Path) -> dict:
    """The smoke grid as a user runs it, on CUDA; returns the runs' key metrics and the wall time."""
    store = f"sqlite:///{workdir}/mlflow.db"
    env = dict(os.environ, MLFLOW_TRACKING_URI=store, MASKSAE_OUTPUT_DIR=str(workdir / "runs"))
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "train", "-m", *SMOKE, f"hydra.sweep.dir={workdir}/multirun"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=420)
    if done.returncode != 0:
        fail(f"the smoke grid exited {done.returncode}:\n{done.stderr[-4000:]}")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("gpu-check")
    runs = client.search_runs([experiment.experiment_id])
    if len(runs) != 4 or any(run.info.status != "FINISHED" for run in runs):
        fail(f"expected 4 FINISHED runs, got {[(run.info.run_name, run.info.status) for run in runs]}")
    metrics = {}
    for run in runs:
        wanted = {name: round(value, 4) for name, value in run.data.metrics.items()
                  if name in ("core/explained_variance", "core/l0", "core/ce_loss_recovered", "absorption/mean_full_absorption_score")}
        if not wanted:
            fail(f"run {run.info.run_name} logged no eval metrics")
        metrics[run.info.run_name] = wanted
    return {"stage": "smoke grid (CUDA, fp32+bf16 LLM, packs of 2, all evals)", "wall_s": round(time.time() - started, 1), "runs": metrics}


def sae_steps(architecture: str, d_in: int) -> dict:
    """Training steps of one SAE at d_sae 65,536 on the GPU: tokens/s and peak memory."""
    from bench.sae_step import our_sae, our_step

    torch.cuda.reset_peak_memory_stats()
    x_BD = torch.randn(BATCH, d_in, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    sae = our_sae(architecture, d_in, D_SAE, K, x_BD.cpu()).cuda()
    step = our_step(sae, x_BD, lr=4e-4)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(STEPS):
        step()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    loss = float(sae.training_loss(x_BD, dead_mask_F=None).loss)
    if not torch.isfinite(torch.tensor(loss)):
        fail(f"{architecture} at d_sae {D_SAE}: loss {loss}")
    return {"stage": f"{architecture} step, d_sae {D_SAE}, batch {BATCH}, d_in {d_in}", "tokens_per_s": round(BATCH * STEPS / elapsed),
            "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2), "final_loss": round(loss, 4)}


def main() -> None:
    if not torch.cuda.is_available():
        print("[gpu-check] no CUDA device here (torch.cuda.is_available() is False): nothing checked", file=sys.stderr)
        sys.exit(2)
    started = time.time()
    results = [{"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}]
    print(json.dumps(results[0]), flush=True)
    with tempfile.TemporaryDirectory(prefix="masksae-gpu-check-") as workdir:
        results.append(smoke_grid(Path(workdir)))
        print(json.dumps(results[-1]), flush=True)
    from masksae.config import compose_config

    d_in = int(compose_config("train").model.d_model)
    for architecture in ("topk", "jumprelu"):
        results.append(sae_steps(architecture, d_in))
        print(json.dumps(results[-1]), flush=True)
    (REPO / "bench" / "gpu_check.json").write_text(json.dumps(results, indent=2))
    print(f"[gpu-check] passed in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
