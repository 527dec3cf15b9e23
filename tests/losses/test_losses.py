"""Loss values against hand-computed references, the curriculum, and the loss bundle's rules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from upt_lightning.losses import (
    OperatorLoss,
    compute_inverse_loss_curriculum_weight,
    compute_operator_loss_bundle,
    forward_loss,
    inverse_decoding_loss,
    inverse_encoding_loss,
    masked_mse,
    rollout_loss,
    spectral_loss,
)
from upt_lightning.losses.bundle import _term_weights


class ScaledCoordinateDecoder(nn.Module):
    """Stand-in decoder with a hand-computable output: ``u = latent[b, 0, 0] * x``, ``v = 0``."""

    field_channels = {"u": 1, "v": 1}

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.seen_points: list[torch.Tensor] = []

    def forward(self, points, latent):
        self.calls += 1
        self.seen_points.append(points)
        u = latent[:, :1, :1] * points[..., :1]
        return {"u": u, "v": torch.zeros_like(u)}


class ConstantDecoder(nn.Module):
    """Stand-in decoder ``u(points) = latent[b, 0, 0]`` at every point."""

    field_channels = {"u": 1}

    def forward(self, points, latent):
        return {"u": latent[:, :1, :1].expand(-1, points.shape[1], 1)}


class DoublingMeanEncoder(nn.Module):
    """Stand-in encoder: every latent entry is ``2 * mean_n u`` (shape ``(B, 1, 2)``)."""

    accepts_point_subsets = False

    def forward(self, fields, coords, meta):
        return 2 * fields["u"].mean(dim=1, keepdim=True).expand(-1, 1, 2)


def test_forward_and_rollout_losses_equal_hand_computed_mse():
    assert forward_loss(torch.zeros(2, 3, 4), torch.full((2, 3, 4), 2.0)).item() == pytest.approx(4.0)
    pred, target = torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    target[..., 0] = 3.0  # half the entries off by 2 -> mean (4 + 0) / 2
    assert rollout_loss(pred, target).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="shape"):
        forward_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=r"\(B, K, T, D\)"):
        rollout_loss(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))


def test_masked_mse_ignores_padding():
    pred = torch.zeros(2, 3, 2)
    target = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [1e6, 1e6]], [[2.0, 2.0], [1e6, 1e6], [1e6, 1e6]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # real squared errors: 1, 1, 9, 9, 4, 4 -> mean 28 / 6
    assert masked_mse(pred, target, mask).item() == pytest.approx(28 / 6)


def test_inverse_encoding_loss_equals_hand_value_and_follows_decoder_channel_order():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 4, 1).expand(2, 4, 1)
    latent = torch.tensor([1.0, 3.0]).reshape(2, 1, 1)
    fields = {"v": torch.ones(2, 4, 1), "u": x.clone()}  # reversed order on purpose
    # sample 0: u exact, v off by 1 -> mean over (points, 2 channels) 0.5
    # sample 1: u off by 2x, mean x^2 = 3.5 -> (4 * 3.5 + 1) / 2 = 7.5 ; batch mean 4.0, times weight 0.5
    loss = inverse_encoding_loss(fields, latent, ScaledCoordinateDecoder(), x, weight=0.5)
    assert loss.item() == pytest.approx(2.0)
    as_tensor = torch.cat([fields["u"], fields["v"]], dim=-1)
    assert inverse_encoding_loss(as_tensor, latent, ScaledCoordinateDecoder(), x, weight=0.5).item() == pytest.approx(2.0)


@pytest.mark.parametrize("strategy, per_sample", [("uniform", False), ("stratified", True)])
def test_inverse_encoding_loss_on_sampled_queries_compares_at_the_decoded_points(strategy, per_sample):
    x = torch.rand(3, 200, 1, generator=torch.Generator().manual_seed(0))
    decoder = ScaledCoordinateDecoder()
    latent = torch.zeros(3, 1, 1)  # decoded u = v = 0, so the error at a point is x^2 (u) and 1 (v)
    fields = {"u": x, "v": torch.ones_like(x)}
    generator = torch.Generator().manual_seed(1)
    loss = inverse_encoding_loss(
        fields, latent, decoder, x, num_queries=50, query_strategy=strategy, grid_shape=None,
        generator=generator, per_sample=per_sample,
    )
    (seen,) = decoder.seen_points
    assert seen.shape == (3, 50, 1)
    assert loss.item() == pytest.approx(((seen**2).mean().item() + 1.0) / 2)


def test_inverse_encoding_loss_with_mask_averages_over_real_points_only():
    x = torch.tensor([[1.0, 2.0, 99.0], [3.0, 99.0, 99.0]]).unsqueeze(-1)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    fields = {"u": x, "v": torch.zeros_like(x)}
    latent = torch.zeros(2, 1, 1)  # decoded u = 0 -> errors x^2 on u, 0 on v
    loss = inverse_encoding_loss(fields, latent, ScaledCoordinateDecoder(), x, mask=mask)
    assert loss.item() == pytest.approx((1 + 4 + 9) / (3 * 2))
    sampled = inverse_encoding_loss(fields, latent, ScaledCoordinateDecoder(), x, num_queries=1, mask=mask)
    # one real point per sample: x in {1, 2} for sample 0, x = 3 for sample 1; padding (99) never drawn
    assert sampled.item() in (pytest.approx((1 + 9) / 4), pytest.approx((4 + 9) / 4))


def test_inverse_decoding_loss_equals_hand_value_and_detaches_the_target():
    latent = torch.tensor([[[1.0, 4.0]]], requires_grad=True)
    coords = torch.rand(1, 5, 2)
    loss = inverse_decoding_loss(latent, ConstantDecoder(), DoublingMeanEncoder(), coords, coords, {}, weight=2.0)
    # re-encoded = [2, 2] vs target [1, 4]: MSE (1 + 4) / 2 = 2.5, times 2
    assert loss.item() == pytest.approx(5.0)
    loss.backward()
    # Only the decode-re-encode path carries gradient: 2 * d/da 0.5 * ((2a - 1)^2 + (2a - 4)^2) = -4 at
    # a = 1; an undetached target would add 2 * (1 - 2a) = -2 here and 2 * (4 - 2a) = 4 to entry 1.
    torch.testing.assert_close(latent.grad, torch.tensor([[[-4.0, 0.0]]]))


def test_inverse_decoding_loss_sampled_gradient_of_a_constant_decoder_is_exact():
    # Every point's gradient is the same here, so 2 sampled points scaled by 5 / 2 give the full one.
    latent = torch.tensor([[[1.0, 4.0]]], requires_grad=True)
    coords = torch.rand(1, 5, 2)
    loss = inverse_decoding_loss(latent, ConstantDecoder(), DoublingMeanEncoder(), coords, coords, {}, weight=2.0,
                                 num_queries=2, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(5.0)
    loss.backward()
    torch.testing.assert_close(latent.grad, torch.tensor([[[-4.0, 0.0]]]))


def _sine_grid(n: int, mode: int, shift: float = 0.0) -> torch.Tensor:
    return torch.sin(2 * math.pi * mode * (torch.arange(n, dtype=torch.float64) + shift) / n)


def test_spectral_loss_of_a_pure_sine_matches_its_known_spectrum():
    # rfft (ortho) of sin(2 pi m n / N) has one coefficient of modulus sqrt(N) / 2 among N / 2 + 1.
    n = 64
    pred = torch.stack([_sine_grid(n, 3), torch.cos(2 * math.pi * 5 * torch.arange(n) / n).double()], dim=-1)
    assert spectral_loss(pred[None], torch.zeros(1, n, 2, dtype=torch.double), (n,)).item() == pytest.approx(16 / 33)
    assert spectral_loss(pred[None], torch.zeros(1, n, 2, dtype=torch.double), (1, n)).item() == pytest.approx(16 / 33)


def test_spectral_loss_ignores_phase_and_uses_the_spatial_axes_of_a_2d_grid():
    shifted, sine = _sine_grid(64, 3, shift=5.0), _sine_grid(64, 3)
    assert torch.mean((shifted - sine) ** 2) > 0.1
    assert spectral_loss(shifted.reshape(1, 64, 1), sine.reshape(1, 64, 1), (64,)).item() == pytest.approx(0, abs=1e-12)
    # cos(2 pi (2 i / 8 + 3 j / 16)): one stored coefficient of modulus sqrt(128) / 2 among 8 * 9.
    i, j = torch.meshgrid(torch.arange(8.0), torch.arange(16.0), indexing="ij")
    wave = torch.cos(2 * math.pi * (2 * i / 8 + 3 * j / 16)).double().reshape(1, 128, 1)
    zeros = torch.zeros_like(wave)
    assert spectral_loss(wave, zeros, (8, 16)).item() == pytest.approx(32 / 72)
    assert spectral_loss({"u": wave}, {"u": zeros}, (8, 16)).item() == pytest.approx(32 / 72)
    with pytest.raises(ValueError, match=r"N = prod\(grid_shape\)"):
        spectral_loss(wave, zeros, (8, 8))


def test_curriculum_follows_the_seed_formula():
    weights = [compute_inverse_loss_curriculum_weight(e, 0.01, 5, 0.05) for e in (4, 5, 6, 9, 10)]
    assert weights == pytest.approx([0.0, 0.0, 0.002, 0.008, 0.01])
    capped = [compute_inverse_loss_curriculum_weight(e, 0.1, 5, 0.05) for e in (6, 9, 10, 100)]
    assert capped == pytest.approx([0.02, 0.05, 0.05, 0.05])
    assert compute_inverse_loss_curriculum_weight(0, 0.01, warmup_epochs=0) == pytest.approx(0.01)
    assert compute_inverse_loss_curriculum_weight(29, 0.04) == pytest.approx(0.04 * 14 / 15)
    for bad in (dict(epoch=-1), dict(base_weight=-0.1), dict(max_weight=math.nan), dict(warmup_epochs=-2)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            compute_inverse_loss_curriculum_weight(**{"epoch": 3, "base_weight": 0.01, **bad})


def _bundle_inputs():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 4, 1).expand(2, 4, 1)
    latent = torch.tensor([1.0, 3.0]).reshape(2, 1, 1)
    pred_r, target_r = torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    target_r[..., 0] = 3.0
    return dict(
        input_fields={"u": x, "v": torch.ones(2, 4, 1)}, encoded_latent=latent, decoder=ScaledCoordinateDecoder(),
        input_positions=x, pred_next=torch.zeros(2, 3, 4), target_next=torch.full((2, 3, 4), 2.0),
        pred_rollout=pred_r, target_rollout=target_r,
    )


def test_bundle_total_is_the_weighted_sum_of_hand_values():
    inputs = _bundle_inputs()
    weights = {"lambda_forward": 1.0, "lambda_inv_enc": 0.5, "lambda_rollout": 0.25}
    bundle = compute_operator_loss_bundle(**inputs, weights=weights)
    assert set(bundle.components) == {"L_forward", "L_inv_enc", "L_rollout"}
    # unweighted: forward 4, inverse encoding 4 (see the inverse-encoding test), rollout 2
    assert {k: v.item() for k, v in bundle.components.items()} == pytest.approx(
        {"L_forward": 4.0, "L_inv_enc": 4.0, "L_rollout": 2.0}
    )
    assert bundle.weights == {"L_forward": 1.0, "L_inv_enc": 0.5, "L_rollout": 0.25}
    assert bundle.total.item() == pytest.approx(4.0 + 2.0 + 0.5)
    assert sum(bundle.weighted.values()).item() == pytest.approx(bundle.total.item())


def test_bundle_computes_only_terms_with_non_zero_effective_weight():
    inputs = _bundle_inputs()
    decoder = inputs["decoder"]
    weights = {"lambda_inv_enc": 0.01, "inverse_loss_warmup_epochs": 5}
    at_warmup = compute_operator_loss_bundle(**inputs, weights=weights, current_epoch=5)
    assert decoder.calls == 0 and set(at_warmup.components) == {"L_forward"}
    after = compute_operator_loss_bundle(**inputs, weights=weights, current_epoch=6)
    assert decoder.calls == 1
    assert after.weights["L_inv_enc"] == pytest.approx(0.002)
    assert after.total.item() == pytest.approx(4.0 + 0.002 * 4.0)
    off = compute_operator_loss_bundle(**inputs, weights={"lambda_forward": 0.0})
    assert off.components == {} and off.total.item() == 0.0 and decoder.calls == 1


@pytest.mark.parametrize("epoch, inv_enc, conservation", [
    (None, 0.03, 0.02),  # no epoch: the base weights
    (15, 0.0, 0.0),  # the seed's default warm-up of 15 epochs: still 0 at its end
    (16, 0.002, 0.02 / 15),  # the ramp: base * (16 - 15) / 15
    (29, 0.028, 0.02 * 14 / 15),
    (40, 0.03, 0.02),  # the ramp's end: the base weight, under the default cap 0.05
])
def test_bundle_weights_follow_the_one_curriculum_with_its_defaults(epoch, inv_enc, conservation):
    weights = {"lambda_inv_enc": 0.03, "lambda_conservation": 0.02, "lambda_rollout": 0.25}
    expected = {"lambda_forward": 1.0, "lambda_inv_enc": inv_enc, "lambda_inv_dec": 0.0, "lambda_rollout": 0.25,
                "lambda_spectral": 0.0, "lambda_conservation": conservation}
    assert _term_weights(weights, epoch) == pytest.approx(expected)
    # The same numbers as training's OperatorLoss at that epoch, given the bundle's (the seed's) defaults: one
    # implementation of the curriculum.
    loss = OperatorLoss(**weights, lambda_forward=1.0, lambda_inv_dec=0.0, lambda_spectral=0.0,
                        inverse_loss_warmup_epochs=15, inverse_loss_max_weight=0.05)
    if epoch is not None:
        loss.set_epoch(epoch)
    assert _term_weights(weights, epoch) == loss.weights(0)


def test_bundle_reads_the_curriculum_settings_from_its_weights_mapping():
    inputs = _bundle_inputs()
    weights = {"lambda_inv_enc": 0.5, "inverse_loss_warmup_epochs": 2, "inverse_loss_max_weight": 0.1}
    bundle = compute_operator_loss_bundle(**inputs, weights=weights, current_epoch=3)
    assert bundle.weights == pytest.approx({"L_forward": 1.0, "L_inv_enc": 0.1})  # ramp 0.25, capped at 0.1
    assert bundle.total.item() == pytest.approx(4.0 + 0.1 * 4.0)
    assert compute_operator_loss_bundle(**inputs, weights=weights, current_epoch=1).weights == {"L_forward": 1.0}


def test_bundle_with_every_weight_zero_returns_a_zero_on_the_inputs_device_and_dtype():
    bundle = compute_operator_loss_bundle(pred_next=torch.zeros(1, 2, 3, dtype=torch.float64), weights={"lambda_forward": 0})
    assert bundle.total.dtype == torch.float64 and bundle.total.device == torch.device("cpu")
    assert bundle.total.item() == 0.0


def test_bundle_raises_for_a_weighted_term_with_missing_inputs():
    inputs = _bundle_inputs()
    inputs["decoder"] = None
    with pytest.raises(ValueError, match=r"L_inv_enc.*lambda_inv_enc=0.1.*'decoder'"):
        compute_operator_loss_bundle(**inputs, weights={"lambda_inv_enc": 0.1})
    with pytest.raises(ValueError, match=r"L_inv_dec.*'encoder', 'query_positions', 'coords'"):
        compute_operator_loss_bundle(**_bundle_inputs(), weights={"lambda_inv_dec": 0.1})
    with pytest.raises(ValueError, match=r"L_spectral.*'spectral_pred', 'spectral_target', 'grid_shape'"):
        compute_operator_loss_bundle(**_bundle_inputs(), weights={"lambda_spectral": 1.0})
    with pytest.raises(ValueError, match=r"L_forward.*'pred_next', 'target_next'"):
        compute_operator_loss_bundle(weights={"lambda_forward": 1.0})


def test_bundle_and_losses_reject_bad_weights_and_strategies():
    with pytest.raises(ValueError, match="lambda_rollout.*>= 0"):
        compute_operator_loss_bundle(**_bundle_inputs(), weights={"lambda_rollout": -0.1})
    with pytest.raises(ValueError, match="unknown loss weight keys.*lambda_inv_encoder"):
        compute_operator_loss_bundle(**_bundle_inputs(), weights={"lambda_inv_encoder": 0.1})
    with pytest.raises(ValueError, match="inverse_loss_warmup_epochs"):
        compute_operator_loss_bundle(**_bundle_inputs(), weights={"inverse_loss_warmup_epochs": -1})
    with pytest.raises(ValueError, match="'stratifed'"):
        inverse_encoding_loss(torch.zeros(1, 4, 2), torch.zeros(1, 1, 1), ScaledCoordinateDecoder(), torch.zeros(1, 4, 1),
                              query_strategy="stratifed")
    with pytest.raises(ValueError, match="weight"):
        inverse_encoding_loss(torch.zeros(1, 4, 2), torch.zeros(1, 1, 1), ScaledCoordinateDecoder(), torch.zeros(1, 4, 1), weight=-1)
