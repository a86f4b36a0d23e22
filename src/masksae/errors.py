"""Error types that the command line turns into one-line messages and a non-zero exit."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid: names the key, the bad value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid config {key}={value!r}: {allowed}")


class OfflineError(RuntimeError):
    """A resource that needs the network (Hugging Face hub) was asked for while offline."""


class LiveRunError(RuntimeError):
    """A run is being trained by a live job (fresh heartbeat): this process must not take it over."""
