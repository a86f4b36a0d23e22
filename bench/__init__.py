"""Benchmarks behind `make bench` (not part of `make test`)."""
