"""Evaluations of trained SAEs: core reconstruction and CE metrics (more suites plug in beside it)."""
