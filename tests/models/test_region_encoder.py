"""RegionEncoder: one latent token per cell from least-squares polynomial fits over scattered points."""

import pytest
import torch

from upt_lightning.models.builders import build_encoder
from upt_lightning.models.region_encoder import RegionEncoder, legendre, polynomial_exponents

SPEC = {"u": 1, "v": 1}


def make_encoder(**kwargs) -> RegionEncoder:
    torch.manual_seed(0)
    settings = dict(degree=3, window=1.5, dim=32, depth=1, num_heads=4, latent_tokens=16, latent_dim=8)
    return RegionEncoder(SPEC, **{**settings, **kwargs}).eval()


def reconstruct(encoder: RegionEncoder, coefficients, coords):
    """The fitted polynomials of every window evaluated at its member points: (values (P, C), point idx, batch idx)."""
    mask = torch.ones(coords.shape[:2], dtype=torch.bool)
    batch_idx, point_idx, cell, local = encoder.window_members(coords, mask)
    values = (encoder.basis(local).unsqueeze(-1) * coefficients[batch_idx, cell]).sum(1)
    return values, batch_idx, point_idx


def test_legendre_matches_closed_forms():
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    p = legendre(x, 4)
    torch.testing.assert_close(p[:, 2], (3 * x**2 - 1) / 2)
    torch.testing.assert_close(p[:, 3], (5 * x**3 - 3 * x) / 2)
    torch.testing.assert_close(p[:, 4], (35 * x**4 - 30 * x**2 + 3) / 8)
    assert len(polynomial_exponents(2, 3)) == 10 and len(polynomial_exponents(3, 2)) == 10


def test_fit_reproduces_a_polynomial_field_in_every_window():
    """A field of degree <= the encoder's is in every window's span: the fit returns it at every member point."""
    encoder = make_encoder(degree=3, ridge=1e-9)
    generator = torch.Generator().manual_seed(1)
    coords = torch.rand(2, 900, 2, generator=generator, dtype=torch.float64)
    x, y = coords[..., 0], coords[..., 1]
    fields = torch.stack([x**3 - 2 * x * y + 0.3, y**2 * x + y], dim=-1)
    encoder = encoder.double()
    coefficients = encoder.fit(fields, coords, torch.ones(2, 900, dtype=torch.bool))
    values, batch_idx, point_idx = reconstruct(encoder, coefficients, coords)
    torch.testing.assert_close(values, fields[batch_idx, point_idx], atol=1e-6, rtol=0)
    assert len(point_idx) > 900 * 2  # windows of 1.5 cells overlap: most points lie in more than one


def test_tokens_of_a_smooth_field_barely_depend_on_where_the_points_lie():
    """Two random point sets of one smooth field give windows whose fitted polynomials agree, and match the
    field, to within 1% at points neither set holds: what a token holds is the field, not the point layout."""
    encoder = make_encoder(degree=3, latent_tokens=64)

    def field(c):
        return torch.stack([torch.sin(2 * torch.pi * c[..., 0]) * torch.cos(2 * torch.pi * c[..., 1]),
                            torch.cos(2 * torch.pi * (c[..., 0] + c[..., 1]))], dim=-1)

    generator = torch.Generator().manual_seed(2)
    first, second, probe = (torch.rand(1, 2500, 2, generator=generator) for _ in range(3))
    mask = torch.ones(1, 2500, dtype=torch.bool)
    fit_a, fit_b = (encoder.fit(field(points), points, mask) for points in (first, second))
    values_a, batch_idx, point_idx = reconstruct(encoder, fit_a, probe)
    values_b = reconstruct(encoder, fit_b, probe)[0]
    truth = field(probe)[batch_idx, point_idx]
    assert (values_a - values_b).norm() / truth.norm() < 0.01
    assert (values_a - truth).norm() / truth.norm() < 0.01


def test_padding_never_changes_the_tokens():
    encoder = make_encoder()
    generator = torch.Generator().manual_seed(3)
    fields, coords = torch.randn(1, 400, 2, generator=generator), torch.rand(1, 400, 2, generator=generator)
    padded_fields = torch.cat([fields, torch.full((1, 30, 2), float("nan"))], dim=1)
    padded_coords = torch.cat([coords, torch.rand(1, 30, 2, generator=generator)], dim=1)
    mask = torch.cat([torch.ones(1, 400, dtype=torch.bool), torch.zeros(1, 30, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(encoder(padded_fields, padded_coords, {"mask": mask}), encoder(fields, coords))


def test_periodic_windows_make_a_one_cell_shift_roll_the_tokens():
    """On the torus, moving every point by one cell width moves each window's content to the next cell: the
    fit coefficients roll by one cell along that axis (without wrapping, the border windows would differ)."""
    encoder = make_encoder(periodic=True, latent_tokens=16)  # 4 x 4 cells
    generator = torch.Generator().manual_seed(4)
    coords = torch.rand(1, 1200, 2, generator=generator, dtype=torch.float64)
    fields = torch.randn(1, 1200, 2, generator=generator, dtype=torch.float64)
    encoder = encoder.double()
    mask = torch.ones(1, 1200, dtype=torch.bool)
    shifted = (coords + torch.tensor([0.25, 0.0], dtype=torch.float64)) % 1.0
    base = encoder.fit(fields, coords, mask).reshape(1, 4, 4, -1)
    moved = encoder.fit(fields, shifted, mask).reshape(1, 4, 4, -1)
    torch.testing.assert_close(moved, base.roll(1, dims=1), atol=1e-8, rtol=1e-6)


def test_gradients_reach_the_fields_and_every_parameter():
    encoder = make_encoder().train()
    generator = torch.Generator().manual_seed(5)
    fields = torch.randn(2, 300, 2, generator=generator, requires_grad=True)
    coords = torch.rand(2, 300, 2, generator=generator)
    encoder(fields, coords).square().sum().backward()
    assert fields.grad is not None and fields.grad.abs().sum() > 0  # the inverse-encoding loss needs this path
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_build_encoder_picks_region_pooling_and_refuses_unknown_poolings():
    mesh = {"kind": "mesh", "num_supernodes": 64, "radius": 0.1, "dim": 32, "num_heads": 4, "depth": 1}
    built = build_encoder({**mesh, "pooling": "region", "degree": 2}, SPEC, None, 2, 16, 8)
    assert isinstance(built, RegionEncoder) and built.degree == 2 and built.latent_tokens == 16
    with pytest.raises(ValueError, match="pooling='voronoi' is unknown"):
        build_encoder({**mesh, "pooling": "voronoi"}, SPEC, None, 2, 16, 8)


@pytest.mark.parametrize("kwargs, message", [({"window": 0.5}, "window must lie in"),
                                              ({"ridge": 0.0}, "ridge must be positive"),
                                              ({"degree": 0}, "degree")])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RegionEncoder(SPEC, **kwargs)
