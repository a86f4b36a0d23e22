"""What SLURM says about jobs: states from accounting (sacct), and the array tasks a launch submitted."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

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
    """{task index: '<array>_<task>'} of the newest array submitted into a submitit folder (`.submitit/%j`)."""
    tasks: dict[int, tuple[int, str]] = {}
    for entry in submitit_root.iterdir() if submitit_root.is_dir() else ():
        match = _TASK_DIR.match(entry.name)
        if match and int(match[1]) >= tasks.get(int(match[2]), (-1, ""))[0]:
            tasks[int(match[2])] = (int(match[1]), entry.name)
    return {task: name for task, (_, name) in tasks.items()}
