"""SAE train-step throughput: ours vs SAELens (same weights, same batch), dense-step FLOP/s vs measured matmul peak."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from statistics import median

import torch
from omegaconf import OmegaConf

from masksae.config import CONF_DIR
from masksae.saes import SparseAutoencoder, build_sae


def time_once(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def timed(step: Callable[[], object], repeats: int) -> list[float]:
    """Seconds per call, after one warm-up call."""
    step()
    return [time_once(step) for _ in range(repeats)]


def matmul_peak_flops(size: int, repeats: int) -> float:
    """Best fp32 FLOP/s of a size x size matmul on this machine, this run."""
    a_NN, b_NN = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / min(timed(lambda: a_NN @ b_NN, repeats))


def our_sae(architecture: str, d_in: int, d_sae: int, k: int, sample_ND: torch.Tensor, **overrides: object) -> SparseAutoencoder:
    """The shipped config of `architecture` at the given sizes, initialised from data as the pipeline does."""
    cfg = OmegaConf.load(f"{CONF_DIR}/sae/{architecture}.yaml")
    cfg.d_sae = d_sae
    for key, value in {"k": k, "target_l0": k, **overrides}.items():
        if key in cfg:
            cfg[key] = value
    torch.manual_seed(0)
    sae = build_sae(cfg, d_in)
    with torch.no_grad():
        sae.init_from_data(sample_ND)
    return sae


def our_step(sae: SparseAutoencoder, x_BD: torch.Tensor, lr: float, compile_loss: bool = False) -> Callable[[], None]:
    """What the Lightning loop does per step: loss, dead-latent bookkeeping, backward, decoder-norm hooks, clip, Adam."""
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    tokens_since_fired_F = torch.zeros(sae.d_sae, dtype=torch.long, device=x_BD.device)
    training_loss = torch.compile(sae.training_loss) if compile_loss else sae.training_loss

    def step() -> None:
        output = training_loss(x_BD, dead_mask_F=None)
        with torch.no_grad():
            tokens_since_fired_F.add_(x_BD.shape[0]).masked_fill_(output.fired_F, 0)
        output.loss.backward()
        sae.before_optimizer_step()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        sae.after_optimizer_step()
        optimizer.zero_grad(set_to_none=True)

    return step


def saelens_step(architecture: str, ours: SparseAutoencoder, x_BD: torch.Tensor, k: int) -> Callable[[], None]:
    """SAELens's own SAETrainer._train_step on its TopK / JumpReLU training SAE at its default settings, with our
    initial weights copied in (same parameters, so both sides do the same maths at the same sparsity)."""
    from sae_lens import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    d_in, d_sae = ours.d_in, ours.d_sae
    if architecture == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    else:
        sae = JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        for name, parameter in sae.named_parameters():
            parameter.copy_(getattr(ours, name))
    trainer_cfg = SAETrainerConfig(total_training_samples=x_BD.shape[0] * 10**6, train_batch_size_samples=x_BD.shape[0],
                                   device="cpu", lr_end=3e-5)  # lr_end: what its runner config's post-init sets
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=iter(()))
    return lambda: trainer._train_step(sae, x_BD)


def compare_with_saelens(architecture: str, x_BD: torch.Tensor, d_sae: int, k: int, repeats: int, *,
                         with_compile: bool = False, **overrides: object) -> dict[str, float]:
    """Tokens/s of both train steps (and ours under torch.compile), interleaved so that load on the machine hits all alike."""
    ours = our_sae(architecture, x_BD.shape[1], d_sae, k, x_BD, **overrides)
    steps = {"ours": our_step(copy.deepcopy(ours), x_BD, lr=4e-4), "saelens": saelens_step(architecture, ours, x_BD, k)}
    if with_compile:
        steps["ours_compiled"] = our_step(copy.deepcopy(ours), x_BD, lr=4e-4, compile_loss=True)
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(time_once(step))
    result = {f"{name}_tokens_per_s": x_BD.shape[0] / median(t) for name, t in times.items()}
    result.update({f"{name}_step_s": [round(v, 3) for v in t] for name, t in times.items()})
    result["ratio"] = result["ours_tokens_per_s"] / result["saelens_tokens_per_s"]
    return result


def dense_step_flops(x_BD: torch.Tensor, d_sae: int, repeats: int) -> dict[str, float]:
    """FLOP/s of the ReLU SAE's step (every matmul dense). Counted: encoder forward and weight gradient, decoder
    forward, weight and input gradients: 5 matmuls of 2 B D F each (b_dec's encoder gradient is a vector-matrix
    product, see SparseAutoencoder.pre_activations; elementwise work is not counted)."""
    sae = our_sae("relu", x_BD.shape[1], d_sae, 0, x_BD)
    step_times = timed(our_step(sae, x_BD, lr=4e-4), repeats)
    flops = 5 * 2 * x_BD.shape[0] * x_BD.shape[1] * d_sae
    return {"dense_step_s": [round(t, 3) for t in step_times], "dense_step_flops": flops / median(step_times)}
