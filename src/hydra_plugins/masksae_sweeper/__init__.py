"""Hydra sweeper plugin for masksae grids (`hydra/sweeper: masksae`); the logic lives in masksae.launch.driver."""
