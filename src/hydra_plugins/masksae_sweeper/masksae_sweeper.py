"""Hydra's basic sweeper, with masksae's plan in front (skip FINISHED, resume, re-run FAILED, dry run) and a summary after."""

from __future__ import annotations

from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser


class MasksaeSweeper(BasicSweeper):
    """Expands the grid like BasicSweeper, then lets masksae.launch.driver decide which points to launch."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None, dry_run: bool = False,
                 pack_size: int = 1) -> None:
        super().__init__(max_batch_size, params)
        self.dry_run = dry_run
        self.pack_size = pack_size

    def sweep(self, arguments: list[str]) -> Any:
        from masksae.launch.driver import run_sweep

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        loader = self.hydra_context.config_loader
        overrides = OverridesParser.create(config_loader=loader).parse_overrides([*self._parse_config(), *arguments])
        jobs = [job for batch in self.split_arguments(overrides, None) for job in batch]
        return run_sweep(self.config, jobs, lambda job: loader.load_sweep_config(self.config, list(job)), self.launcher, self.dry_run, self.pack_size)
