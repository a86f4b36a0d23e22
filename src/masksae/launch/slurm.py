"""What SLURM says: job states from accounting (sacct), the array tasks a launch submitted, what partitions offer
(sinfo) against what a sweep requests, and why sbatch refused a submission."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# States after which a job will not run again. PREEMPTED and REQUEUED are left out: submitit requeues those.
TERMINAL = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT"})
_TASK_DIR = re.compile(r"^(\d+)_(\d+)$")


def available() -> bool:
    """Whether SLURM's accounting client is on this machine."""
    return shutil.which("sacct") is not None


def job_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: state} from sacct (first word: 'CANCELLED by 0' -> 'CANCELLED'); ids sacct does not list are left out."""
    if not job_ids or not available():
        return {}
    done = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                          capture_output=True, text=True, timeout=60)
    states: dict[str, str] = {}
    for line in done.stdout.splitlines():
        job_id, _, state = line.partition("|")
        if job_id in job_ids and state:
            states[job_id] = state.split()[0]
    return states


def submitted_tasks(submitit_root: Path) -> dict[int, str]:
    """{task index: job id} of the newest submission into a submitit folder (`.submitit/%j`): `<array>_<task>` for
    an array; a single job (submitit submits one point as a plain job, folder `<id>`) is task 0 with id `<id>`."""
    tasks: dict[int, tuple[int, str]] = {}
    names = [entry.name for entry in submitit_root.iterdir()] if submitit_root.is_dir() else []
    arrays = {match[1] for match in map(_TASK_DIR.match, names) if match}
    for name in names:
        match = _TASK_DIR.match(name)
        if match:
            index, job = int(match[2]), int(match[1])
        elif name.isdigit() and name not in arrays:
            index, job = 0, int(name)
        else:
            continue
        if job >= tasks.get(index, (-1, ""))[0]:
            tasks[index] = (job, name)
    return {task: name for task, (_, name) in tasks.items()}


@dataclass(frozen=True)
class Partition:
    """What one partition's largest node offers, from sinfo."""

    name: str
    default: bool
    up: bool
    cpus: int
    mem_mb: int
    gpus: int
    time_limit_min: float | None  # None: no limit


def _gpus(gres: str) -> int:
    """GPUs in a node's GRES string ('gpu:4', 'gpu:a100:2(S:0-1),gpu:v100:2', '(null)')."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def _minutes(limit: str) -> float | None:
    """sinfo's time limit ('infinite', 'D-HH', 'D-HH:MM', 'D-HH:MM:SS', 'HH:MM:SS', 'MM:SS', 'MM') in minutes."""
    if limit.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, clock = limit.rpartition("-")
    fields = [int(f) for f in clock.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = (fields + [0, 0])[:3]
    elif len(fields) == 1:  # minutes
        hours, minutes, seconds = 0, fields[0], 0
    else:  # minutes:seconds or hours:minutes:seconds
        hours, minutes, seconds = [0] * (3 - len(fields)) + fields
    return (int(days or 0) * 24 + hours) * 60 + minutes + seconds / 60


def partitions() -> dict[str, Partition]:
    """{name: Partition} from `sinfo` (empty when sinfo is not here or does not answer)."""
    if shutil.which("sinfo") is None:
        return {}
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%a|%l|%c|%m|%G"], capture_output=True, text=True, timeout=60)
    found: dict[str, Partition] = {}
    for line in done.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 6:
            continue
        name, state, limit, cpus, mem, gres = fields
        known = found.get(name.rstrip("*"))
        node = Partition(name.rstrip("*"), name.endswith("*"), state == "up", int(cpus.rstrip("+")), int(mem.rstrip("+")),
                         _gpus(gres), _minutes(limit))
        if known is not None:
            node = Partition(node.name, node.default, node.up, max(node.cpus, known.cpus), max(node.mem_mb, known.mem_mb),
                             max(node.gpus, known.gpus), node.time_limit_min)
        found[node.name] = node
    return found


# (launcher key, environment variable) of each requested resource, for messages that say what to change.
SETTINGS = {"partition": "MASKSAE_SLURM_PARTITION", "gpus": "MASKSAE_SLURM_GPUS", "cpus": "MASKSAE_SLURM_CPUS",
            "mem_gb": "MASKSAE_SLURM_MEM_GB", "time_min": "MASKSAE_SLURM_TIME_MIN", "account": "MASKSAE_SLURM_ACCOUNT"}


def _change(key: str, allowed: str) -> str:
    return f"set {setting(key)} to {allowed}"


def resource_problems(launcher: Any, found: dict[str, Partition]) -> tuple[Partition | None, list[str]]:
    """Check the requested partition, GPUs, CPUs, memory and time limit (`launcher.*`) against what sinfo reports:
    (the partition jobs would go to, one message per request no node of it can meet)."""
    if not found:
        return None, []
    wanted = launcher.get("partition")
    partition = found.get(wanted) if wanted else next((p for p in found.values() if p.default), None)
    if partition is None:
        listed = ", ".join(found)
        what = f"launcher.partition={wanted}: no such partition (sinfo lists {listed}); " if wanted else "no default partition: "
        return None, [what + _change("partition", f"one of {listed}")]
    where = f"partition {partition.name}"
    problems = []
    if not partition.up:
        problems.append(f"{where} is not up (sinfo); {_change('partition', 'one that is up')}")
    for key, requested, offered, unit in (("gpus", int(launcher.gpus), partition.gpus, " GPUs"), ("cpus", int(launcher.cpus), partition.cpus, " CPUs"),
                                          ("mem_gb", int(launcher.mem_gb), partition.mem_mb // 1024, " GB")):
        if requested > offered:
            problems.append(f"launcher.{key}={requested}: the nodes of {where} have at most {offered}{unit} (sinfo); "
                            + _change(key, f"at most {offered}"))
    limit = partition.time_limit_min
    if limit is not None and int(launcher.time_min) > limit:
        problems.append(f"launcher.time_min={launcher.time_min}: {where} allows at most {limit:.0f} min; " + _change("time_min", f"at most {limit:.0f}"))
    return partition, problems


def setting(key: str) -> str:
    """How to change a launcher resource: its config key and environment variable."""
    return f"launcher.{key} (or {SETTINGS[key]})"


# What sbatch says when it refuses a job (lower case), and the setting that usually causes it.
REFUSAL_CAUSES = (
    ("generic resource", setting("gpus")), ("gres", setting("gpus")), ("gpu", setting("gpus")), ("account", setting("account")),
    ("partition", setting("partition")), ("memory", setting("mem_gb")), ("time limit", setting("time_min")),
    ("node configuration", f"{setting('cpus')}, {setting('mem_gb')} and {setting('gpus')}"), ("cpu", setting("cpus")),
    ("feature", "hydra.launcher.constraint"), ("qos", "hydra.launcher.qos"),
)


def refusal_message(error: BaseException) -> str:
    """One line: sbatch's own error and the setting to change."""
    text = str(error)
    lines = [part.strip() for part in text.replace("sbatch:", "\nsbatch:").splitlines() if part.strip()]
    said = next((line for line in lines if line.startswith("sbatch: error")), lines[0] if lines else type(error).__name__)
    cause = next((where for needle, where in REFUSAL_CAUSES if needle in said.lower()), "launcher.* and hydra.launcher.*")
    return f"SLURM refused the job array ({said}); check {cause}"
