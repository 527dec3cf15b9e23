"""Sin-cos and Fourier features against their written-out formulas."""

from __future__ import annotations

import math

import pytest
import torch

from upt_lightning.models.embeddings import FourierFeatures, SincosEmbedding


def test_sincos_matches_formula_per_axis_and_zero_pads():
    embed = SincosEmbedding(coord_dim=2, dim=10, scale=100.0, max_wavelength=1e4)
    coords = torch.tensor([[0.25, 0.75]])
    out = embed(coords)[0]
    half = 2  # 10 // (2 * 2)
    for axis, x in enumerate([0.25, 0.75]):
        omegas = [1e4 ** (-j / half) for j in range(half)]
        expected = [math.sin(100 * x * w) for w in omegas] + [math.cos(100 * x * w) for w in omegas]
        torch.testing.assert_close(out[axis * 4 : (axis + 1) * 4], torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert torch.equal(out[8:], torch.zeros(2))


def test_sincos_separates_nearby_positions():
    embed = SincosEmbedding(coord_dim=1, dim=32)
    features = embed(torch.linspace(0, 1, 101).unsqueeze(-1))
    distances = torch.cdist(features, features)
    assert distances[~torch.eye(101, dtype=torch.bool)].min() > 0.1


def test_sincos_rejects_too_small_dim_and_wrong_coordinates():
    with pytest.raises(ValueError, match="needs dim >= 6"):
        SincosEmbedding(coord_dim=3, dim=4)
    with pytest.raises(ValueError, match="built for 2"):
        SincosEmbedding(coord_dim=2, dim=8)(torch.rand(4, 3))


def test_fourier_features_match_formula():
    features = FourierFeatures(coord_dim=2, num_frequencies=3)
    point = torch.tensor([0.1, 0.6])
    out = features(point)
    angles = [2 * math.pi * 2**k * x for x in (0.1, 0.6) for k in range(3)]
    expected = [0.1, 0.6] + [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
    assert features.out_dim == out.shape[-1] == 14
    torch.testing.assert_close(out, torch.tensor(expected), rtol=1e-5, atol=1e-5)
