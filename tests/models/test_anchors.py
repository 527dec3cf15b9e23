"""Latent-token anchors and the locality bias that lets information through attention at initialisation."""

import math

import pytest
import torch

from upt_lightning.models import AnyPointDecoder, GridEncoder
from upt_lightning.models.anchors import anchor_factors, anchor_grid, locality_bias


@pytest.mark.parametrize("tokens, dim, expected", [(16, 2, (4, 4)), (8, 2, (4, 2)), (32, 2, (8, 4)), (7, 2, (7, 1)),
                                                    (27, 3, (3, 3, 3)), (10, 1, (10,))])
def test_anchor_factors_multiply_back(tokens, dim, expected):
    assert anchor_factors(tokens, dim) == expected
    assert math.prod(anchor_factors(tokens, dim)) == tokens


def test_anchor_grid_is_cell_centred_row_major():
    grid, spacing = anchor_grid(8, 2)
    assert spacing == 0.5
    torch.testing.assert_close(grid[:3], torch.tensor([[0.125, 0.25], [0.125, 0.75], [0.375, 0.25]]))


def test_locality_bias_by_hand():
    bias = locality_bias(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.3, 0.4], [0.0, 0.0]]), width=0.5)
    # -|d|^2 / (2 w^2): |d|^2 = 0.25 -> -0.25 / 0.5 = -0.5; zero distance -> 0
    torch.testing.assert_close(bias, torch.tensor([[[[-0.5, 0.0]]]]))


def test_periodic_locality_bias_measures_the_distance_to_the_nearest_image():
    query, keys = torch.tensor([[0.02, 0.5]]), torch.tensor([[0.98, 0.5], [0.5, 0.5], [0.02, 1.49]])
    wrapped = locality_bias(query, keys, width=0.1, periodic=True)
    # 0.04 across the boundary, 0.48 inside, 0.01 one period up: -|d|^2 / (2 * 0.01)
    torch.testing.assert_close(wrapped, torch.tensor([[[[-0.08, -11.52, -0.005]]]]))
    plain = locality_bias(query, keys, width=0.1)
    torch.testing.assert_close(plain[..., 1], wrapped[..., 1])
    assert plain[0, 0, 0, 0] < -40 and plain[0, 0, 0, 2] < -40


def zero_mean_waves(batch=16, grid=(16, 16)):
    axes = [(torch.arange(n) + 0.5) / n for n in grid]
    xy = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    phase = torch.rand(batch, 1) * 2 * math.pi
    return torch.sin(2 * math.pi * xy[:, 0] + phase).unsqueeze(-1), xy


def latent_share_across_samples(locality):
    torch.manual_seed(0)
    fields, _ = zero_mean_waves()
    encoder = GridEncoder({"u": 1}, (16, 16), patch_size=4, dim=32, depth=1, num_heads=2, latent_tokens=16,
                          latent_dim=16, locality=locality)
    with torch.no_grad():
        latent = encoder(fields)
    return float(latent.var(0).mean() / latent.var())


def test_fresh_encoder_passes_zero_mean_fields_far_better_with_locality():
    # Uniform attention averages a zero-mean field to (almost) nothing; the locality bias keeps it local,
    # so the latents of different inputs differ from the first step on.
    with_bias, without = latent_share_across_samples(True), latent_share_across_samples(False)
    assert with_bias > 5 * without, (with_bias, without)


def test_decoder_queries_read_nearby_tokens_first():
    torch.manual_seed(0)
    decoder = AnyPointDecoder({"u": 1}, 2, 8, dim=16, depth=1, num_heads=2)
    latent = torch.zeros(1, 16, 8)
    anchors, _ = anchor_grid(16, 2)
    with torch.no_grad():
        base = decoder(anchors.unsqueeze(0), latent)["u"]
        latent[0, 0] = 5.0  # perturb the token anchored at (0.125, 0.125)
        moved = (decoder(anchors.unsqueeze(0), latent)["u"] - base).abs().squeeze()
    assert moved[0] == moved.max() and moved[0] > 3 * moved[-1]
