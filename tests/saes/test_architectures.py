"""Behaviour of every SAE architecture on small synthetic data from a planted sparse dictionary."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from masksae.saes.topk import scatter_topk
from masksae.saes import SparseAutoencoder, build_sae
from masksae.saes.jumprelu import JumpReLUWithL0

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "sae"
ARCHITECTURES = ["relu", "topk", "batchtopk", "jumprelu", "matryoshka_batchtopk"]
TOPK_FAMILY = ["topk", "batchtopk", "matryoshka_batchtopk"]
BATCH_THRESHOLD = ["batchtopk", "matryoshka_batchtopk"]
UNIT_NORM = ["topk", "batchtopk", "jumprelu", "matryoshka_batchtopk"]
D_IN, D_SAE, K = 32, 128, 8
# Penalties scaled to d_in = 32 (the shipped values suit LM widths; see the YAML comments).
SMALL = {"d_sae": D_SAE, "k": K, "target_l0": K, "l1_coeff": 1.0, "sparsity_coeff": D_IN / 4}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny matmuls run far faster on one thread, above all on a busy shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_sae(name: str, **overrides: object) -> SparseAutoencoder:
    """The shipped config for `name` at test size, keys it lacks in `overrides` ignored."""
    torch.manual_seed(0)
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    for key, value in {**SMALL, **overrides}.items():
        if key in cfg:
            cfg[key] = value
    return build_sae(cfg, D_IN)


def _raw_planted(n_tokens: int, seed: int) -> torch.Tensor:
    fixed = torch.Generator().manual_seed(1234)
    dictionary_GD = torch.randn(96, D_IN, generator=fixed)
    dictionary_GD /= dictionary_GD.norm(dim=-1, keepdim=True)
    offset_D = 0.3 * torch.randn(D_IN, generator=fixed)
    gen = torch.Generator().manual_seed(seed)
    active_NG = torch.rand(n_tokens, 96, generator=gen) < 4 / 96
    return active_NG * (0.5 + torch.rand(n_tokens, 96, generator=gen)) @ dictionary_GD + offset_D


@functools.cache
def _data_scale() -> float:
    return (D_IN / _raw_planted(8192, seed=12345).pow(2).sum(dim=-1).mean()).sqrt().item()


def planted_data(n_tokens: int, seed: int = 0) -> torch.Tensor:
    """x = sparse codes (about 4 of 96 features, positive magnitudes) @ a fixed unit-norm dictionary
    + a fixed offset, scaled so that E||x||^2 = d_in; `seed` draws the codes."""
    return _raw_planted(n_tokens, seed) * _data_scale()


def ready_sae(name: str, **overrides: object) -> SparseAutoencoder:
    sae = make_sae(name, **overrides)
    sae.init_from_data(planted_data(2048, seed=1))
    return sae


def train(sae: SparseAutoencoder, steps: int, lr: float = 1e-3) -> list[float]:
    """Adam steps with the SAE's optimiser hooks; returns the loss of each step."""
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    data = planted_data(steps * 128, seed=2).split(128)
    losses = []
    for x_BD in data:
        out = sae.training_loss(x_BD, dead_mask_F=None)
        optimizer.zero_grad()
        out.loss.backward()
        sae.before_optimizer_step()
        optimizer.step()
        sae.after_optimizer_step()
        losses.append(out.loss.item())
    return losses


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_shapes_and_metrics(name: str) -> None:
    sae = ready_sae(name)
    x_BD = planted_data(16)
    assert sae.architecture == name and (sae.d_in, sae.d_sae) == (D_IN, D_SAE)
    assert sae.W_enc.shape == (D_IN, D_SAE) and sae.W_dec.shape == (D_SAE, D_IN)
    assert sae.b_enc.shape == (D_SAE,) and sae.b_dec.shape == (D_IN,)
    assert sae.encode(x_BD).shape == (16, D_SAE)
    assert sae.decode(sae.encode(x_BD)).shape == (16, D_IN)
    assert sae(x_BD).shape == (16, D_IN)
    if name not in BATCH_THRESHOLD:  # the CE splice passes [batch, seq, d_in]
        torch.testing.assert_close(sae(x_BD.view(2, 8, D_IN)), sae(x_BD).view(2, 8, D_IN))
    out = sae.training_loss(x_BD, dead_mask_F=torch.zeros(D_SAE, dtype=torch.bool))
    assert out.loss.shape == () and out.loss.requires_grad
    assert out.xhat_BD.shape == (16, D_IN) and out.fired_F.shape == (D_SAE,) and out.fired_F.dtype == torch.bool
    assert out.f_BF is None if name == "topk" else out.f_BF.shape == (16, D_SAE)
    assert {"mse", "l0", "recon_loss"} <= out.metrics.keys()
    assert all(v.shape == () and not v.requires_grad for v in out.metrics.values())
    if name in ("jumprelu", *BATCH_THRESHOLD):
        assert sae.threshold.shape == (D_SAE,)


def test_topk_l0_is_exactly_k() -> None:
    sae = ready_sae("topk")
    x_BD = planted_data(64)
    assert ((sae.encode(x_BD) > 0).sum(dim=-1) == K).all()
    out = sae.training_loss(x_BD)
    assert out.metrics["l0"] == K
    assert torch.equal(out.fired_F, (sae.encode(x_BD) > 0).any(dim=0))


@pytest.mark.parametrize("name", BATCH_THRESHOLD)
def test_batch_topk_l0_and_inference_threshold(name: str) -> None:
    sae = ready_sae(name)
    x_BD = planted_data(256, seed=3)
    assert not sae.threshold_estimated
    assert (sae.encode(x_BD) > 0).sum() == K * 256  # falls back to batch top-k
    for x_chunk in planted_data(256 * 50, seed=4).split(256):
        f_BF = sae.training_loss(x_chunk).f_BF
        assert (f_BF > 0).sum() == K * 256
    assert sae.threshold_estimated and torch.all(sae.threshold == sae.threshold[0])
    inference_l0 = (sae.encode(x_BD) > 0).float().sum(dim=-1).mean().item()
    assert abs(inference_l0 - K) < 0.2 * K


@pytest.mark.parametrize("name", BATCH_THRESHOLD)
def test_calibrated_inference_threshold_gives_l0_k_on_other_held_out_rows(name: str) -> None:
    sae = ready_sae(name)
    train(sae, steps=20)  # a short run: the moving average still weighs its first, unrepresentative batches
    other_ND = planted_data(4096, seed=21)
    before = (sae.encode(other_ND) > 0).float().sum(-1).mean().item()
    calibrated = sae.calibrate(planted_data(4096, seed=20))
    after = (sae.encode(other_ND) > 0).float().sum(-1).mean().item()
    print(f"{name}: inference L0 {before:.2f} with the moving average, {after:.2f} calibrated (k = {K})")
    assert calibrated["threshold"] == sae.threshold[0] and torch.all(sae.threshold == sae.threshold[0])
    assert abs(after / K - 1) <= 0.05


def test_jumprelu_calibration_puts_l0_at_target_on_a_shifted_distribution() -> None:
    """Trained on one distribution, evaluated on another (as masked-context training and clean-text evals are)."""
    sae = ready_sae("jumprelu")
    train(sae, steps=20)
    shifted_ND = planted_data(4096, seed=21) * 1.3
    before = (sae.encode(shifted_ND) > 0).float().sum(-1).mean().item()
    calibrated = sae.calibrate(planted_data(4096, seed=20) * 1.3)
    after = (sae.encode(shifted_ND) > 0).float().sum(-1).mean().item()
    print(f"jumprelu: L0 {before:.2f} on the shifted rows, {after:.2f} calibrated (target {K})")
    assert abs(before / K - 1) > 0.10 and calibrated["l0_uncalibrated"] == pytest.approx(before, rel=0.1)
    assert abs(after / K - 1) <= 0.05 and (sae.threshold >= 0).all()


def test_jumprelu_threshold_gets_gradient_through_ste() -> None:
    sae = ready_sae("jumprelu")
    sae.training_loss(planted_data(256)).loss.backward()
    assert sae.threshold.grad is not None and sae.threshold.grad.abs().sum() > 0
    # The L0 term alone: its pseudo-derivative pushes thresholds up (negative gradient), never down.
    sae.zero_grad()
    pre_BF = sae.pre_activations(planted_data(256)).detach()
    JumpReLUWithL0.apply(pre_BF, sae.threshold, sae.bandwidth, True)[1].sum().backward()
    assert (sae.threshold.grad < 0).any() and (sae.threshold.grad <= 0).all()


def test_jumprelu_init_from_data_starts_at_target_l0() -> None:
    sae = ready_sae("jumprelu")
    l0 = (sae.encode(planted_data(2048, seed=1)) > 0).float().sum(dim=-1).mean().item()
    assert abs(l0 - K) < 0.1 * K


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_decoder_norms_after_optimizer_steps(name: str) -> None:
    sae = ready_sae(name)
    train(sae, steps=5)
    norms_F = sae.W_dec.norm(dim=-1)
    if name in UNIT_NORM:
        assert sae.requires_unit_norm_decoder
        torch.testing.assert_close(norms_F, torch.ones(D_SAE))
    else:
        assert not sae.requires_unit_norm_decoder and not torch.allclose(norms_F, torch.ones(D_SAE))


def test_gradient_parallel_to_decoder_rows_is_removed() -> None:
    sae = ready_sae("topk")
    sae.training_loss(planted_data(64)).loss.backward()
    sae.before_optimizer_step()
    parallel_F = (sae.W_dec.grad * sae.W_dec).sum(dim=-1)
    assert parallel_F.abs().max() < 1e-5 * sae.W_dec.grad.abs().max()


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_loss_falls_on_planted_dictionary(name: str) -> None:
    sae = ready_sae(name)
    losses = train(sae, steps=200)
    assert sum(losses[-10:]) / 10 < 0.7 * losses[0]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_fold_activation_scale(name: str) -> None:
    sae = ready_sae(name)
    train(sae, steps=20)  # moves thresholds / estimates the batch threshold
    sae = sae.double()
    x_BD, scale = planted_data(64, seed=5).double() / 3.7, 3.7
    if name == "relu":  # trained rows are not unit-norm: the fold has to normalise them latent by latent
        with torch.no_grad():
            sae.W_dec.mul_(torch.rand(D_SAE, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5)
    f_scaled, xhat_scaled = sae.encode(x_BD * scale), sae(x_BD * scale)
    norms_F = sae.W_dec.norm(dim=-1).detach()
    sae.fold_activation_scale(scale)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(D_SAE, dtype=torch.float64))  # what SAEBench assumes
    torch.testing.assert_close(sae.encode(x_BD), f_scaled * norms_F / scale, rtol=1e-5, atol=1e-8)  # each latent's contribution norm
    torch.testing.assert_close(sae(x_BD), xhat_scaled / scale, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", TOPK_FAMILY)
def test_auxk_loss_only_with_dead_latents(name: str) -> None:
    sae = ready_sae(name)
    x_BD = planted_data(128)
    none_dead = sae.training_loss(x_BD, dead_mask_F=torch.zeros(D_SAE, dtype=torch.bool))
    assert none_dead.metrics["aux_loss"] == 0
    assert sae.training_loss(x_BD, dead_mask_F=None).metrics["aux_loss"] == 0
    dead_mask_F = torch.arange(D_SAE) >= D_SAE // 2
    some_dead = sae.training_loss(x_BD, dead_mask_F=dead_mask_F)
    assert some_dead.metrics["aux_loss"] > 0
    sae.zero_grad()
    (some_dead.loss - some_dead.metrics["recon_loss"]).backward()
    assert sae.W_enc.grad[:, dead_mask_F].abs().sum() > 0


def test_jumprelu_pre_act_loss_only_with_dead_latents() -> None:
    sae = ready_sae("jumprelu")
    x_BD = planted_data(128)
    none_dead = sae.training_loss(x_BD, dead_mask_F=torch.zeros(D_SAE, dtype=torch.bool))
    assert none_dead.metrics["pre_act_loss"] == 0
    all_dead = sae.training_loss(x_BD, dead_mask_F=torch.ones(D_SAE, dtype=torch.bool))
    assert all_dead.metrics["pre_act_loss"] > 0


@pytest.mark.parametrize(("name", "key"), [("relu", "l1"), ("jumprelu", "sparsity_loss")])
def test_sparsity_scale_multiplies_the_penalty(name: str, key: str) -> None:
    sae = ready_sae(name)
    x_BD = planted_data(128)
    full = sae.training_loss(x_BD, sparsity_scale=1.0)
    off = sae.training_loss(x_BD, sparsity_scale=0.0)
    torch.testing.assert_close(off.loss, full.metrics["recon_loss"])
    assert full.loss > off.loss and full.metrics[key] > 0


def test_matryoshka_loss_is_weighted_sum_over_nested_prefixes() -> None:
    sae = ready_sae("matryoshka_batchtopk", group_fractions=[0.25, 0.75], group_weights=[0.3, 0.7])
    x_BD = planted_data(64)
    out = sae.training_loss(x_BD)
    f_BF, W_dec_FD = out.f_BF, sae.W_dec
    inner_BD = f_BF[:, :32] @ W_dec_FD[:32] + sae.b_dec
    inner_loss = (x_BD - inner_BD).pow(2).sum(-1).mean()
    expected = 0.3 * inner_loss + 0.7 * (x_BD - out.xhat_BD).pow(2).sum(-1).mean()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.xhat_BD, sae.decode(f_BF))


def test_topk_sparse_decode_matches_the_dense_path_in_value_and_gradient() -> None:
    sae = ready_sae("topk")
    x_BD = planted_data(64, seed=5)
    dead_F = torch.zeros(sae.d_sae, dtype=torch.bool)
    dead_F[::3] = True
    sparse_loss = sae.training_loss(x_BD, dead_mask_F=dead_F).loss
    sparse_grads = torch.autograd.grad(sparse_loss, [sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec])
    post_BF = torch.relu(sae.pre_activations(x_BD))
    f_BF = scatter_topk(post_BF, sae.k)
    xhat_BD = f_BF @ sae.W_dec + sae.b_dec
    dead_BF = torch.where(dead_F, post_BF, torch.zeros_like(post_BF))
    residual_BD = (x_BD - xhat_BD).detach()
    aux_BD = scatter_topk(dead_BF, min(sae.aux_k, sae.d_sae)) @ sae.W_dec
    aux = (aux_BD - residual_BD).pow(2).sum(-1).mean() / (residual_BD - residual_BD.mean(0)).pow(2).sum(-1).mean()
    dense_loss = (x_BD - xhat_BD).pow(2).sum(-1).mean() + sae.aux_coeff * aux
    dense_grads = torch.autograd.grad(dense_loss, [sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec])
    torch.testing.assert_close(sparse_loss, dense_loss, rtol=1e-5, atol=1e-6)
    for sparse_grad, dense_grad in zip(sparse_grads, dense_grads):
        torch.testing.assert_close(sparse_grad, dense_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("l0_to_pre", [True, False])
def test_jumprelu_fused_function_matches_the_straight_through_formulas(l0_to_pre: bool) -> None:
    """f = pre * H(pre - t), L0 = sum H; d/dpre = H * G (+ K g_b / bw with L0's estimator on pre);
    d/dt = -(1/bw) sum_b K_bf (t_f G_bf + g_b), K the rectangle."""
    gen = torch.Generator().manual_seed(7)
    bandwidth = 0.3
    pre_BF = torch.randn(64, D_SAE, generator=gen, dtype=torch.float64).requires_grad_()
    threshold_F = (0.5 * torch.rand(D_SAE, generator=gen, dtype=torch.float64)).requires_grad_()
    G_BF, g_B = torch.randn(64, D_SAE, generator=gen, dtype=torch.float64), torch.randn(64, generator=gen, dtype=torch.float64)
    f_BF, l0_B = JumpReLUWithL0.apply(pre_BF, threshold_F, bandwidth, l0_to_pre)
    ((f_BF * G_BF).sum() + (l0_B * g_B).sum()).backward()
    H_BF = (pre_BF > threshold_F).double()
    K_BF = (((pre_BF - threshold_F) / bandwidth).abs() < 0.5).double()
    torch.testing.assert_close(f_BF, pre_BF * H_BF)
    torch.testing.assert_close(l0_B, H_BF.sum(dim=-1))
    torch.testing.assert_close(pre_BF.grad, G_BF * H_BF + (K_BF * g_B[:, None] / bandwidth if l0_to_pre else 0.0))
    torch.testing.assert_close(threshold_F.grad, -(K_BF * (threshold_F * G_BF + g_B[:, None])).sum(dim=0) / bandwidth)
    assert K_BF.sum() > 0 and H_BF.sum() > 0


def test_pre_activations_match_the_textbook_formula_in_value_and_gradient() -> None:
    sae = ready_sae("relu").double()
    x_BD = planted_data(32, seed=6).double()
    weights_BF = torch.randn(32, D_SAE, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    params = [sae.W_enc, sae.b_enc, sae.b_dec]
    ours = sae.pre_activations(x_BD)
    textbook = (x_BD - sae.b_dec) @ sae.W_enc + sae.b_enc
    torch.testing.assert_close(ours, textbook)
    for got, expected in zip(torch.autograd.grad((ours * weights_BF).sum(), params),
                             torch.autograd.grad((textbook * weights_BF).sum(), params), strict=True):
        torch.testing.assert_close(got, expected)
