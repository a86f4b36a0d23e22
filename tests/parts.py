"""Real parts some tests need (SLURM, PostgreSQL, a host name alias, sae-lens): where one cannot start, the test skips,
except under MASKSAE_REQUIRE_REAL_PARTS=1 (set by .ci/run), where it fails: a CI that cannot set them up is red."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

REQUIRE_ENV = "MASKSAE_REQUIRE_REAL_PARTS"


def required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def missing(reason: str) -> NoReturn:
    """Skip for `reason`, or fail when real parts are required."""
    if required():
        pytest.fail(f"a real part this test needs is missing ({REQUIRE_ENV}=1): {reason}", pytrace=False)
    pytest.skip(reason)


def import_or_missing(name: str, reason: str) -> ModuleType:
    """The module `name`, or missing(reason) when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(reason)
