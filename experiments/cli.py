"""Shared by the experiments command lines: a bad input becomes a one-line error and exit code 2, as in `python -m train`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from masksae.errors import ConfigError, OfflineError

EXIT_BAD_INPUT = 2
T = TypeVar("T")


def or_exit(action: Callable[[], T]) -> T:
    """The action's result; on ConfigError / OfflineError print 'error: ...' to stderr and exit 2."""
    try:
        return action()
    except (ConfigError, OfflineError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
