"""AnyPointDecoder: shapes, chunking, query independence, gradients through a frozen decoder, memory."""

from __future__ import annotations

import pytest
import torch

from upt_lightning.models import AnyPointDecoder, saved_tensor_bytes
from upt_lightning.models.anchors import anchor_grid

SPEC = {"u": 1, "vel": 2}


def build(**kwargs):
    options = dict(dim=16, depth=2, num_heads=2, num_frequencies=4) | kwargs
    return AnyPointDecoder(SPEC, coord_dim=2, latent_dim=6, **options)


def frozen(decoder):
    for parameter in decoder.parameters():
        parameter.requires_grad_(False)
    return decoder


def build_like(decoder, chunk_size):
    copy = build(chunk_size=chunk_size)
    copy.load_state_dict(decoder.state_dict())
    return copy


@pytest.mark.parametrize("coord_dim", [1, 2])
def test_output_is_dict_in_field_order_with_shapes(coord_dim):
    decoder = AnyPointDecoder(SPEC, coord_dim=coord_dim, latent_dim=6, dim=16, num_heads=2)
    out = decoder(torch.rand(3, 11, coord_dim), torch.randn(3, 4, 6))
    assert list(out) == ["u", "vel"]
    assert out["u"].shape == (3, 11, 1) and out["vel"].shape == (3, 11, 2)


def test_chunked_equals_unchunked():
    decoder = build()
    points, latent = torch.rand(2, 103, 2), torch.randn(2, 5, 6)
    with torch.no_grad():
        full = decoder(points, latent)
        by_argument = decoder(points, latent, chunk_size=16)
        by_attribute = build_like(decoder, chunk_size=10)(points, latent)
    for name in SPEC:
        torch.testing.assert_close(by_argument[name], full[name], rtol=0, atol=1e-5)
        torch.testing.assert_close(by_attribute[name], full[name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("learned_locality", [False, True])
def test_points_shared_by_the_batch_decode_as_each_sample_alone(learned_locality):
    """Equal points in every sample take the shared path (features and locality bias computed once) when asked
    to look for them: the values and the gradients equal those of decoding each sample on its own."""
    decoder = build(periodic=True, learned_locality=learned_locality)
    if learned_locality:
        with torch.no_grad():
            decoder.locality_log_scale.copy_(torch.tensor([0.5, -0.3]))
    grid = torch.rand(1, 40, 2)
    latent = torch.randn(3, 5, 6, requires_grad=True)
    shared = decoder(grid.expand(3, -1, -1).clone(), latent, share_points=True)
    alone = [decoder(grid, latent[i:i + 1]) for i in range(3)]
    for name in SPEC:
        torch.testing.assert_close(shared[name], torch.cat([a[name] for a in alone]), rtol=0, atol=1e-6)
    (g_shared,) = torch.autograd.grad(sum(v.square().sum() for v in shared.values()), latent)
    (g_alone,) = torch.autograd.grad(sum(v.square().sum() for a in alone for v in a.values()), latent)
    torch.testing.assert_close(g_shared, g_alone, rtol=1e-5, atol=1e-6)
    params = [p for p in decoder.parameters() if p.requires_grad]
    decoded = decoder(grid.expand(3, -1, -1), latent.detach(), share_points=True)
    grads_shared = torch.autograd.grad(sum(v.square().sum() for v in decoded.values()), params)
    grads_alone = torch.autograd.grad(sum(v.square().sum() for i in range(3)
                                          for v in decoder(grid, latent.detach()[i:i + 1]).values()), params)
    for a, b in zip(grads_shared, grads_alone):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_queries_are_independent():
    decoder = build()
    points, latent = torch.rand(2, 64, 2), torch.randn(2, 5, 6)
    subset = torch.tensor([5, 0, 63, 17, 18])
    full = decoder(points, latent)
    part = decoder(points[:, subset], latent)
    for name in SPEC:
        torch.testing.assert_close(part[name], full[name][:, subset], rtol=0, atol=1e-5)


def test_output_depends_on_latent_and_position():
    decoder = build()
    points, latent = torch.rand(1, 8, 2), torch.randn(1, 5, 6)
    base = decoder(points, latent)["u"]
    assert (decoder(points, latent + 0.5)["u"] - base).abs().max() > 1e-4
    assert (base[0, 1:] - base[0, :1]).abs().max() > 1e-4


def test_gradients_flow_through_frozen_decoder_and_match_finite_differences():
    decoder = frozen(build(dim=8, depth=1, num_frequencies=2)).double()
    points = torch.rand(1, 4, 2, dtype=torch.float64, requires_grad=True)
    latent = torch.randn(1, 3, 6, dtype=torch.float64, requires_grad=True)
    out = decoder(points, latent)
    (out["u"].square().sum() + out["vel"].sum()).backward()
    assert latent.grad.abs().sum() > 0 and points.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in decoder.parameters())
    assert torch.autograd.gradcheck(lambda p, z: decoder(p, z)["vel"], (points, latent))


def test_backward_memory_halves_with_half_the_queries():
    decoder = frozen(build(dim=16, depth=2, num_heads=2, num_frequencies=4))
    latent = torch.randn(2, 8, 6, requires_grad=True)

    def saved(num_queries):
        points = torch.rand(2, num_queries, 2)
        return saved_tensor_bytes(lambda: decoder(points, latent))

    full, half = saved(4096), saved(2048)
    # Per query at least the query embedding (dim floats) is kept for backward.
    assert full > 2 * 4096 * 16 * 4
    assert half / full <= 0.55


def test_bad_inputs_are_clear_errors():
    decoder = build()
    with pytest.raises(ValueError, match=r"points must have shape \(B, N, 2\)"):
        decoder(torch.rand(2, 10, 3), torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match=r"latent must have shape \(2, N, 6\)"):
        decoder(torch.rand(2, 10, 2), torch.randn(3, 5, 6))
    with pytest.raises(ValueError, match="points contains 1 NaN"):
        decoder(torch.tensor([[[0.5, float("nan")]]]), torch.randn(1, 5, 6))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        decoder(torch.rand(1, 10, 2), torch.randn(1, 5, 6), chunk_size=0)


@pytest.mark.parametrize("learned_locality", [False, True])
def test_a_periodic_decoder_decodes_the_same_values_one_period_away(learned_locality):
    torch.manual_seed(0)
    points, latent = torch.rand(2, 32, 2), torch.randn(2, 16, 6)
    shift = torch.tensor([1.0, -2.0])
    periodic = build(periodic=True, learned_locality=learned_locality)
    if learned_locality:
        with torch.no_grad():
            periodic.locality_log_scale.copy_(torch.tensor([1.5, -1.0]))
    plain = build()
    for name in SPEC:
        torch.testing.assert_close(periodic(points + shift, latent)[name], periodic(points, latent)[name],
                                   rtol=0, atol=2e-5)
        # The plain decoder sees the raw coordinate and a bias that does not wrap: not periodic.
        assert (plain(points + shift, latent)[name] - plain(points, latent)[name]).abs().max() > 1e-2


def test_a_periodic_decoder_reads_the_tokens_across_the_boundary():
    # A query just inside x = 0 is next to the tokens of the last column of anchors (x = 0.875): perturbing
    # one of them moves it as much as perturbing its own-side neighbour does.
    torch.manual_seed(0)
    latent = torch.zeros(1, 16, 6)
    anchors, _ = anchor_grid(16, 2)
    query = torch.tensor([[[0.0, 0.125]]])

    def moved(decoder, token):
        with torch.no_grad():
            base = decoder(query, latent)["u"]
            poked = latent.clone()
            poked[0, token] = 5.0
            return (decoder(query, poked)["u"] - base).abs().item()

    periodic, plain = build(periodic=True, depth=1), build(depth=1)
    # Token 0 sits at (0.125, 0.125), token 12 at (0.875, 0.125): both 0.125 from the query across the boundary.
    assert anchors[0].tolist() == [0.125, 0.125] and anchors[12].tolist() == [0.875, 0.125]
    assert moved(periodic, 12) > 0.3 * moved(periodic, 0)
    assert moved(plain, 12) < 0.05 * moved(plain, 0)


def test_learned_locality_sharpens_per_head_and_is_trained():
    torch.manual_seed(0)
    decoder = build(depth=1, learned_locality=True)
    assert torch.equal(decoder.locality_log_scale.detach(), torch.zeros(2))
    points, latent = torch.rand(2, 16, 2), torch.randn(2, 16, 6)
    decoder(points, latent)["u"].square().sum().backward()
    assert torch.isfinite(decoder.locality_log_scale.grad).all() and decoder.locality_log_scale.grad.abs().min() > 0
    # Very sharp heads read only the token anchored at the query: the other tokens stop mattering.
    with torch.no_grad():
        decoder.locality_log_scale.fill_(6.0)
        anchors, _ = anchor_grid(16, 2)
        at_token_5 = anchors[5].view(1, 1, 2)
        base = decoder(at_token_5, latent[:1])["u"]
        poked = latent[:1].clone()
        poked[0, 6] += 5.0
        assert (decoder(at_token_5, poked)["u"] - base).abs().item() < 1e-4
        poked = latent[:1].clone()
        poked[0, 5] += 5.0
        assert (decoder(at_token_5, poked)["u"] - base).abs().item() > 1e-2


def test_learned_locality_without_the_locality_bias_is_refused():
    with pytest.raises(ValueError, match="learned_locality=true"):
        build(locality=False, learned_locality=True)
