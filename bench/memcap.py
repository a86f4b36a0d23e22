"""Run a command under a hard memory cap (a cgroup of its own, swap forbidden) and report its peak memory: the check that
a training set larger than the cap trains anyway (`make memcap-check`). Needs root and the cgroup memory controller.

    python -m bench.memcap --limit-gb 3 --json out.json -- python -m train activations.train_tokens=1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


class MemoryCgroup:
    """A fresh memory cgroup (v2 where the unified hierarchy has the memory controller, else v1) limited to `limit_bytes`."""

    def __init__(self, limit_bytes: int) -> None:
        name = f"masksae-memcap-{uuid.uuid4().hex[:8]}"
        self.v2 = "memory" in (V2 / "cgroup.controllers").read_text().split() if (V2 / "cgroup.controllers").exists() else False
        if not self.v2 and not (V1 / "memory.limit_in_bytes").exists():
            raise SystemExit("memcap: no cgroup memory controller here (neither v2 with 'memory' nor v1 /sys/fs/cgroup/memory)")
        self.path = (V2 if self.v2 else V1) / name
        try:
            self.path.mkdir()
        except PermissionError as error:
            raise SystemExit(f"memcap: cannot create {self.path} ({error}): run as root") from error
        if self.v2:
            (self.path / "memory.max").write_text(str(limit_bytes))
            (self.path / "memory.swap.max").write_text("0")
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            swap_limit = self.path / "memory.memsw.limit_in_bytes"
            if swap_limit.exists():
                swap_limit.write_text(str(limit_bytes))

    def join(self) -> None:
        """Move the calling process into the cgroup (run in the child before exec)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak_bytes(self) -> int:
        """Peak charge of the cgroup: anonymous memory plus page cache it touched (reclaimed under the cap)."""
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        return int((self.path / name).read_text()) if (self.path / name).exists() else -1

    def oom_kills(self) -> int:
        text = (self.path / ("memory.events" if self.v2 else "memory.oom_control")).read_text()
        counts = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", 0))

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def wait_with_peak_rss(process: subprocess.Popen) -> tuple[int, float]:
    """Wait for `process`; its exit code and its own peak RSS in GB (wait4: not its parent's, not its siblings')."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss * 1024 / 1e9


def run_capped(command: list[str], limit_bytes: int) -> dict:
    cgroup = MemoryCgroup(limit_bytes)
    started = time.time()
    try:
        returncode, peak_gb = wait_with_peak_rss(subprocess.Popen(command, preexec_fn=cgroup.join))
        return {"command": command, "limit_gb": limit_bytes / 1e9, "returncode": returncode, "wall_s": round(time.time() - started, 1),
                "peak_rss_gb": round(peak_gb, 3),
                "cgroup_peak_gb": round(cgroup.peak_bytes() / 1e9, 3), "oom_kills": cgroup.oom_kills(), "cgroup": "v2" if cgroup.v2 else "v1"}
    finally:
        cgroup.remove()


def drop_training_cache(command: list[str]) -> None:
    """Remove the activation cache of the training set a `-m train <overrides>` command uses, so that it is built (and
    its build measured) under the cap."""
    from masksae.activation_cache import ActivationCache
    from masksae.config import compose_config
    from masksae.pipeline import validate_config
    from masksae.resources import activation_cache, activation_spec

    overrides = command[command.index("train") + 1 :]
    cfg = compose_config("train", overrides)
    spec = activation_spec(cfg, "train", int(cfg.activations.train_tokens), cfg.mask_prob, validate_config(cfg))
    cache: ActivationCache = activation_cache(cfg)
    print(f"[memcap] dropping the training activation cache {cache.folder(spec)} (rebuilt under the cap)", flush=True)
    cache.discard_folder(cache.folder(spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-gb", type=float, required=True)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--drop-train-cache", action="store_true", help="for a `-m train` command: remove its training set's cache first")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    if args.drop_train_cache:
        drop_training_cache(command)
    figures = run_capped(command, int(args.limit_gb * 1e9))
    print("[memcap] " + json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    sys.exit(figures["returncode"] if figures["returncode"] >= 0 else 128 - figures["returncode"])


if __name__ == "__main__":
    main()
