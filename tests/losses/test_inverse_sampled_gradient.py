"""L_inv_dec on a grid with the decoder's backward at sampled points: same value, unbiased gradient."""

from __future__ import annotations

import pytest
import torch

from helpers.inverse import LATENT_DIM, grid_case, tiny_decoder
from upt_lightning.losses import compute_operator_loss_bundle, inverse_decoding_loss, inverse_encoding_loss
from upt_lightning.losses.sampled_gradient import PointSample, draw_point_sample, splice_sampled_gradient
from upt_lightning.query_sampling import apply_query_sampling

ESTIMATES = 200
Q = 16  # of the 64 grid points: gradient scale 4


def _gradient(loss_fn, latent: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(loss_fn(), latent)[0]


def _assert_unbiased(estimates: torch.Tensor, exact: torch.Tensor) -> None:
    """The mean of the estimates is within 3 standard errors of ``exact`` (the error of a mean of M
    independent vectors has norm about sqrt(trace(cov) / M), its standard error), and that bound is
    tight enough to tell a missing N/Q scale (75% off) apart."""
    mean = estimates.mean(dim=0)
    standard_error = ((estimates - mean).pow(2).flatten(1).sum(1).mean() / len(estimates)).sqrt()
    assert standard_error < 0.15 * exact.norm()
    assert (mean - exact).norm() < 3 * standard_error, ((mean - exact).norm() / exact.norm(), standard_error)


@pytest.mark.parametrize("strategy, per_sample", [("uniform", True), ("stratified", False)])
def test_draw_point_sample_keeps_the_points_apply_query_sampling_keeps(strategy, per_sample):
    _, coords, _, meta = grid_case()
    shifted = coords + torch.arange(2.0).view(2, 1, 1)  # samples tell apart which row a point came from
    kept = apply_query_sampling(shifted, coords, Q, strategy, meta["grid_shape"],
                                generator=torch.Generator().manual_seed(3), per_sample=per_sample)[0]
    sample = draw_point_sample(coords, Q, strategy, meta["grid_shape"], generator=torch.Generator().manual_seed(3),
                               per_sample=per_sample)
    assert sample.index.shape == (2, Q) and torch.equal(sample.scale, torch.full((2, 1, 1), 4.0))
    torch.testing.assert_close(shifted.gather(1, sample.index[..., None].expand(-1, -1, 2)), kept, rtol=0, atol=0)
    assert draw_point_sample(coords, 64, strategy, meta["grid_shape"]) is None  # nothing sampled


def test_draw_point_sample_with_padding_draws_real_points_and_scales_by_their_count():
    coords = torch.rand(2, 10, 2)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    sample = draw_point_sample(coords, 3, generator=torch.Generator().manual_seed(0), mask=mask)
    assert sample.index.shape == (2, 3) and bool(mask.gather(1, sample.index).all())
    torch.testing.assert_close(sample.scale.flatten(), torch.tensor([10 / 3, 6 / 3]))


def test_splice_has_the_full_value_and_the_scaled_gradient_of_the_sampled_rows():
    full = torch.randn(2, 5, 3)
    index = torch.tensor([[1, 3], [0, 4]])
    sampled = full.gather(1, index[..., None].expand(-1, -1, 3)).clone().requires_grad_(True)
    spliced = splice_sampled_gradient(full, sampled, PointSample(index, torch.tensor([[[2.5]], [[1.5]]])))
    assert torch.equal(spliced, full)
    upstream = torch.randn(2, 5, 3)
    spliced.backward(upstream)
    expected = torch.tensor([2.5, 1.5]).view(2, 1, 1) * upstream.gather(1, index[..., None].expand(-1, -1, 3))
    torch.testing.assert_close(sampled.grad, expected)


@pytest.mark.parametrize("strategy, per_sample", [("uniform", True), ("stratified", False)])
def test_value_is_the_full_grid_loss_and_the_gradient_an_unbiased_estimate(strategy, per_sample):
    encoder, coords, _, meta = grid_case()
    decoder = tiny_decoder()
    latent = torch.randn(2, 4, LATENT_DIM, requires_grad=True)
    dense = inverse_decoding_loss(latent, decoder, encoder, coords, coords, meta)
    exact = torch.autograd.grad(dense, latent)[0]

    def sampled(seed: int, **kwargs) -> torch.Tensor:
        return inverse_decoding_loss(latent, decoder, encoder, coords, coords, meta, num_queries=Q,
                                     query_strategy=strategy, grid_shape=meta["grid_shape"],
                                     generator=torch.Generator().manual_seed(seed), per_sample=per_sample, **kwargs)

    torch.testing.assert_close(sampled(0), dense, rtol=1e-6, atol=0)
    estimates = torch.stack([_gradient(lambda: sampled(seed), latent) for seed in range(ESTIMATES)])
    assert not torch.allclose(estimates[0], exact, rtol=0.05)  # a real estimate, not the exact gradient
    _assert_unbiased(estimates, exact)
    # The opt-out is the old behaviour: the exact gradient whatever the sample.
    torch.testing.assert_close(_gradient(lambda: sampled(0, sampled_gradient=False), latent), exact)


def test_bundle_decodes_once_for_both_inverse_losses_with_their_values_and_unbiased_gradient():
    encoder, coords, fields, meta = grid_case()
    decoder = tiny_decoder()
    calls = []
    decoder.register_forward_pre_hook(lambda module, args: calls.append((args[0].shape[1], torch.is_grad_enabled())))
    latent = torch.randn(2, 4, LATENT_DIM, requires_grad=True)
    sampling = dict(num_queries=Q, grid_shape=meta["grid_shape"], per_sample=True)

    def bundle(seed: int):
        return compute_operator_loss_bundle(
            input_fields=fields, encoded_latent=latent, decoder=decoder, input_positions=coords, encoder=encoder,
            query_positions=coords, coords=coords, meta=meta, generator=torch.Generator().manual_seed(seed),
            weights={"lambda_forward": 0.0, "lambda_inv_enc": 1.0, "lambda_inv_dec": 1.0}, **sampling,
        )

    calls.clear()
    shared = bundle(5)
    assert calls == [(64, False), (Q, True)]  # the grid without gradients, the sample with them
    alone = inverse_encoding_loss(fields, latent, decoder, coords, generator=torch.Generator().manual_seed(5),
                                  **sampling)
    dense_dec = inverse_decoding_loss(latent, decoder, encoder, coords, coords, meta)
    torch.testing.assert_close(shared.components["L_inv_enc"], alone, rtol=1e-6, atol=0)
    torch.testing.assert_close(shared.components["L_inv_dec"], dense_dec, rtol=1e-6, atol=0)

    dense_enc = inverse_encoding_loss(fields, latent, decoder, coords)
    exact = _gradient(lambda: dense_enc + dense_dec, latent)
    estimates = torch.stack([_gradient(lambda: bundle(seed).total, latent) for seed in range(ESTIMATES)])
    _assert_unbiased(estimates, exact)
