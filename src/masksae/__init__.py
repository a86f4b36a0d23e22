"""masksae: sparse autoencoders trained with masked regularization, swept with Hydra and tracked in MLflow."""

__version__ = "0.1.0"
