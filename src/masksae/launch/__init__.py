"""Cluster sweeps: plans that skip, resume or re-run grid points, SLURM job states, heartbeats, status and summaries."""
