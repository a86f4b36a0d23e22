"""SAE architectures behind one registry: relu, topk, batchtopk, jumprelu, matryoshka_batchtopk."""

from masksae.saes.base import (
    SAE_REGISTRY,
    SparseAutoencoder,
    TrainStepOutput,
    build_sae,
    register,
    resolve_d_sae,
    validate_sae_config,
)
from masksae.saes.batchtopk import BatchTopKSAE
from masksae.saes.jumprelu import JumpReLUSAE
from masksae.saes.matryoshka import MatryoshkaBatchTopKSAE
from masksae.saes.relu import ReLUSAE
from masksae.saes.topk import TopKSAE

__all__ = [
    "SAE_REGISTRY",
    "BatchTopKSAE",
    "JumpReLUSAE",
    "MatryoshkaBatchTopKSAE",
    "ReLUSAE",
    "SparseAutoencoder",
    "TopKSAE",
    "TrainStepOutput",
    "build_sae",
    "register",
    "resolve_d_sae",
    "validate_sae_config",
]
