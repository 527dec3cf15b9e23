"""GridEncoder: patchify order, shapes for 1D/2D/3D grids, construction and input errors, seeding."""

from __future__ import annotations

import pytest
import torch

from upt_lightning.models import GridEncoder

TINY = dict(dim=16, depth=1, num_heads=2, latent_tokens=3, latent_dim=5)


@pytest.mark.parametrize(
    ("grid_shape", "patch_size"), [((64,), 8), ((16, 12), 4), ((8, 6), (2, 3)), ((4, 4, 6), (2, 2, 3))]
)
def test_output_shape_and_dict_equals_tensor_input(grid_shape, patch_size):
    encoder = GridEncoder({"u": 1, "v": 2}, grid_shape, patch_size=patch_size, **TINY)
    n = torch.tensor(grid_shape).prod().item()
    x = torch.randn(2, n, 3)
    z = encoder(x)
    assert z.shape == (2, 3, 5)
    torch.testing.assert_close(encoder({"v": x[..., 1:], "u": x[..., :1]}), z, rtol=0, atol=0)


def test_patchify_matches_loop_reference():
    encoder = GridEncoder({"u": 2}, (6, 8), patch_size=(3, 2), **TINY)
    x = torch.randn(2, 48, 2)
    grid = x.reshape(2, 6, 8, 2)
    reference = torch.stack(
        [grid[:, i : i + 3, j : j + 2, :].reshape(2, -1) for i in range(0, 6, 3) for j in range(0, 8, 2)], dim=1
    )
    torch.testing.assert_close(encoder.patchify(x), reference, rtol=0, atol=0)


def test_output_depends_on_patch_positions():
    encoder = GridEncoder({"u": 1}, (16,), patch_size=4, **TINY)
    x = torch.randn(1, 16, 1)
    swapped = torch.cat([x[:, 4:8], x[:, :4], x[:, 8:]], dim=1)
    assert (encoder(x) - encoder(swapped)).abs().max() > 1e-4


def test_coords_checked_but_grid_structure_used():
    encoder = GridEncoder({"u": 1}, (8, 8), patch_size=4, **TINY)
    x = torch.randn(2, 64, 1)
    coords = torch.rand(2, 64, 2)
    torch.testing.assert_close(encoder(x, coords), encoder(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"coords must have shape \(2, 64, 2\)"):
        encoder(x, torch.rand(2, 64, 3))


def test_patch_size_not_dividing_axis_is_helpful_error():
    with pytest.raises(ValueError, match=r"patch_size 8 does not divide grid axis 1 of size 60.*\[1, 2, 3, 4, 5, 6, 10"):
        GridEncoder({"u": 1}, (64, 60), patch_size=8)
    with pytest.raises(ValueError, match="patch_size .* has 1 entries, grid_shape 2"):
        GridEncoder({"u": 1}, (64, 64), patch_size=(4,))


def test_wrong_point_count_is_error():
    encoder = GridEncoder({"u": 1}, (8, 8), patch_size=4, **TINY)
    with pytest.raises(ValueError, match=r"fields have 63 points but grid_shape \(8, 8\) has 64"):
        encoder(torch.randn(2, 63, 1))
    with pytest.raises(ValueError, match="field spec"):
        encoder(torch.randn(2, 64, 2))


def test_meta_grid_shape_checked_in_all_collated_forms():
    encoder = GridEncoder({"u": 1}, (8, 4), patch_size=2, **TINY)
    x = torch.randn(2, 32, 1)
    expected = encoder(x)
    collated = [torch.tensor([8, 8]), torch.tensor([4, 4])]
    for grid_shape in [(8, 4), torch.tensor([8, 4]), torch.tensor([[8, 4], [8, 4]]), collated]:
        torch.testing.assert_close(encoder(x, meta={"grid_shape": grid_shape}), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"meta\['grid_shape'\] is \(4, 8\).*built for \(8, 4\)"):
        encoder(x, meta={"grid_shape": (4, 8)})
    with pytest.raises(ValueError, match="differs between samples"):
        encoder(x, meta={"grid_shape": torch.tensor([[8, 4], [4, 8]])})


def test_non_finite_fields_rejected():
    encoder = GridEncoder({"u": 1}, (16,), patch_size=4, **TINY)
    x = torch.randn(1, 16, 1)
    x[0, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        encoder(x)


def test_same_seed_gives_identical_weights():
    def build(seed):
        torch.manual_seed(seed)
        return GridEncoder({"u": 1}, (16, 16), patch_size=4, **TINY).state_dict()

    first, second, other = build(7), build(7), build(8)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_patch_pooling_keeps_one_token_per_patch_at_the_decoders_anchor():
    # depth 0: no attention between patches, so token j can only see patch j's values.
    encoder = GridEncoder({"u": 1}, (8, 8), patch_size=2, dim=16, depth=0, num_heads=2, latent_tokens=16,
                          latent_dim=5, pooling="patch")
    torch.manual_seed(0)
    x = torch.randn(1, 64, 1)
    z = encoder(x)
    assert z.shape == (1, 16, 5)
    grid = x.reshape(8, 8).clone()
    grid[4:6, 2:4] += 1.0  # the patch in patch-row 2, patch-column 1: token 2 * 4 + 1
    changed = (encoder(grid.reshape(1, 64, 1)) - z).abs().amax(-1)[0]
    assert changed[9] > 1e-3
    assert torch.all(torch.cat([changed[:9], changed[10:]]) == 0)
    # The decoder assumes token j sits at anchor j: that must be patch j's centre.
    from upt_lightning.models.anchors import anchor_grid

    anchors, _ = anchor_grid(16, 2)
    torch.testing.assert_close(anchors[9], torch.tensor([2.5 / 4, 1.5 / 4]))


@pytest.mark.parametrize(
    ("grid_shape", "patch_size", "tokens", "match"),
    [((8, 8), 2, 8, "latent_tokens must be 16"), ((8, 8), 2, 16, None), ((16,), 4, 4, None)],
)
def test_patch_pooling_checks_the_token_count(grid_shape, patch_size, tokens, match):
    kwargs = dict(dim=16, depth=1, num_heads=2, latent_tokens=tokens, latent_dim=5, pooling="patch")
    if match is None:
        n = torch.tensor(grid_shape).prod().item()
        assert GridEncoder({"u": 1}, grid_shape, patch_size=patch_size, **kwargs)(torch.randn(2, n, 1)).shape == (
            2, tokens, 5)
    else:
        with pytest.raises(ValueError, match=match):
            GridEncoder({"u": 1}, grid_shape, patch_size=patch_size, **kwargs)


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling='mean' is unknown"):
        GridEncoder({"u": 1}, (16,), patch_size=4, pooling="mean", **TINY)
