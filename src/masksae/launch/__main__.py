"""`python -m masksae.launch submit|status|prefetch`: start a sweep detached, show its state, fill caches on a login node."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from masksae.launch import plan as plans
from masksae.launch import slurm
from masksae.launch.heartbeat import STALE_AFTER_S
from masksae.tracking import REPO_ROOT, SWEEP_ID_ENV, sweep_id_from_argv


def sweeps_root() -> Path:
    return Path(os.environ.get("MASKSAE_OUTPUT_DIR") or REPO_ROOT / "outputs") / "sweeps"


def submit(overrides: list[str], driver: str, wait_s: float) -> int:
    """Start `python -m train -m OVERRIDES` detached (or as a small SLURM job); return once its jobs are submitted."""
    sweep_id = sweep_id_from_argv(overrides)
    folder = sweeps_root() / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"driver-{time.strftime('%Y%m%d-%H%M%S')}.log"
    command = [sys.executable, "-m", "train", "-m", *overrides]
    env = dict(os.environ, **{SWEEP_ID_ENV: sweep_id})
    if driver == "sbatch":
        wrapped = " ".join(f"'{part}'" for part in command)
        subprocess.run(["sbatch", "--job-name", f"masksae-driver-{sweep_id}", "--cpus-per-task=1", "--mem=4G",
                        f"--output={log}", f"--chdir={REPO_ROOT}", "--wrap", f"exec {wrapped}"], env=env, check=True)
        print(f"[masksae] sweep {sweep_id}: driver submitted as a SLURM job; log {log}; state: make sweep-status SWEEP={sweep_id}")
        return 0
    started = time.time()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (folder / "driver.pid").write_text(str(process.pid))
    plan_file = folder / "plan.json"
    while time.time() - started < wait_s:
        if process.poll() is not None:
            print(log.read_text()[-3000:])
            return process.returncode
        if plan_file.exists() and plan_file.stat().st_mtime >= started:
            plan = plans.Plan.load(plan_file)
            runs = sum(p.task is not None for p in plan.points)
            tasks = len({p.task for p in plan.points if p.task is not None})  # a pack is one job for several runs
            if plan.launcher != "slurm" or len(slurm.submitted_tasks(plan.submitit_root)) >= tasks:
                print(f"[masksae] sweep {sweep_id}: {runs} runs in {tasks} jobs submitted ({len(plan.points) - runs} not: finished or live); "
                      f"driver pid {process.pid} waits on them, log {log}; state: make sweep-status SWEEP={sweep_id}")
                return 0
        time.sleep(1)
    print(f"[masksae] sweep {sweep_id}: driver pid {process.pid} still planning after {wait_s:.0f} s; log {log}")
    return 0


def newest_plan(sweep_id: str | None) -> Path:
    """plan.json of the given sweep, or of the sweep launched last."""
    if sweep_id:
        return sweeps_root() / sweep_id / "plan.json"
    found = sorted(sweeps_root().glob("*/plan.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"error: no sweep plan under {sweeps_root()} (launch one with make sweep-local)")
    return found[-1]


def status(sweep_id: str | None, stale_after_s: float) -> int:
    """Each run's MLflow state and SLURM state; runs whose job died silently are ended FAILED. Exit 1 if any failed."""
    path = newest_plan(sweep_id)
    if not path.exists():
        raise SystemExit(f"error: no plan for sweep {sweep_id} at {path}")
    plan = plans.Plan.load(path)
    plans.reconcile(plan, stale_after_s)
    states = slurm.job_states([p.slurm_job_id for p in plan.points if p.slurm_job_id])
    print(f"{'#':>3} {'action':7} {'mlflow':9} {'slurm':12} {'job':10} name")
    for p in plan.points:
        print(f"{p.index:>3} {p.action:7} {p.status or '-':9} {states.get(p.slurm_job_id, 'PENDING') if p.slurm_job_id else '-':12} {p.slurm_job_id or '-':10} {p.name}"
              + (f"  ({p.reason[:120]})" if p.reason else ""))
    plan.save(path)
    print(plans.summary_line(plan))
    return 1 if plans.summary(plan)["failed"] else 0


def prefetch(overrides: list[str]) -> int:
    """Download the model (and hub dataset files) of a config into the shared Hugging Face cache; build offline caches."""
    from masksae.config import compose_config
    from masksae.resources import cache_root, split_sequences, shared_model, tokenizer_for

    cfg = compose_config("train", overrides)
    if cfg.model.source == "hub":
        from huggingface_hub import snapshot_download

        where = snapshot_download(cfg.model.hf_id, revision=cfg.model.get("revision"),
                                  allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"])
        print(f"[masksae] model {cfg.model.hf_id} in {where}")
    else:
        tokenizer_for(cfg)
        print(f"[masksae] model {cfg.model.name} converted under {cache_root(cfg)}")
    if cfg.data.source == "hf_stream":
        from huggingface_hub import snapshot_download

        patterns = os.environ.get("PREFETCH_PATTERNS")
        where = snapshot_download(cfg.data.path, repo_type="dataset", revision=cfg.data.get("revision"),
                                  allow_patterns=patterns.split(",") if patterns else None)
        print(f"[masksae] dataset {cfg.data.path} in {where}")
    else:
        split_sequences(cfg, shared_model(cfg), "validation", 1)
        print(f"[masksae] corpus {cfg.data.name} built under {cache_root(cfg)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m masksae.launch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("submit", help="launch a sweep in the background and return once its jobs are submitted")
    run.add_argument("--driver", choices=("detached", "sbatch"), default="detached")
    run.add_argument("--wait", type=float, default=600.0, help="seconds to wait for the submission")
    run.add_argument("overrides", nargs="+")
    state = commands.add_parser("status", help="runs of a sweep in MLflow and SLURM, and its summary")
    state.add_argument("sweep_id", nargs="?")
    state.add_argument("--stale-after", type=float, default=STALE_AFTER_S, help="seconds without heartbeat before a RUNNING run is FAILED")
    fetch = commands.add_parser("prefetch", help="fill the Hugging Face cache and masksae caches for a config")
    fetch.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.command == "submit":
        return submit(args.overrides, args.driver, args.wait)
    if args.command == "status":
        return status(args.sweep_id, args.stale_after)
    return prefetch(args.overrides)


if __name__ == "__main__":
    sys.exit(main())
