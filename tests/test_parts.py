"""The CI switch: a test whose real part is missing skips on a developer's machine and fails under
MASKSAE_REQUIRE_REAL_PARTS=1 (which .ci/run sets), so a CI that cannot set SLURM or PostgreSQL up is red."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.parts import REQUIRE_ENV


def test_a_missing_part_skips_here_and_fails_when_required(tmp_path: Path, repo_root: Path) -> None:
    (tmp_path / "test_needs_part.py").write_text(
        "from tests.parts import import_or_missing\n\n"
        "def test_needs_a_module_that_is_not_installed():\n"
        "    import_or_missing('masksae_no_such_module', 'no such module here')\n")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)]
    env = {key: value for key, value in os.environ.items() if key != REQUIRE_ENV}
    env["PYTHONPATH"] = str(repo_root)
    skipped = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    failed = subprocess.run(command, env={**env, REQUIRE_ENV: "1"}, capture_output=True, text=True, timeout=120)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    assert failed.returncode == 1 and "1 failed" in failed.stdout and "no such module here" in failed.stdout, failed.stdout
