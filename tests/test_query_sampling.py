"""Query sampling: exact counts, equal inclusion probability, spread, masks, logging, errors."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from upt_lightning import query_sampling
from upt_lightning.query_sampling import (
    apply_query_sampling,
    sample_stratified_queries,
    sample_uniform_queries,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_distinct_in_range(indices: torch.Tensor, total: int, k: int) -> None:
    rows = indices.reshape(-1, indices.shape[-1])
    assert rows.shape[1] == k
    assert indices.dtype == torch.long
    assert int(rows.min()) >= 0 and int(rows.max()) < total
    for row in rows:
        assert row.unique().numel() == k


@pytest.mark.parametrize(
    "grid_shape, k",
    [
        ((64, 64), 1), ((64, 64), 2048), ((64, 64), 4095),
        ((63, 65), 1), ((63, 65), 1000), ((63, 65), 4094),
        ((1, 1024), 256), ((1, 1024), 1023), ((1024,), 7),
        ((16, 16, 16), 512), ((5, 7, 3), 13), ((5, 7, 3), 104),
    ],
)
@pytest.mark.parametrize("strategy", ["uniform", "stratified"])
def test_grid_draws_are_exactly_k_distinct_indices(grid_shape, k, strategy):
    total = math.prod(grid_shape)
    for batch_size in (None, 3):
        if strategy == "uniform":
            indices = sample_uniform_queries(total, k, generator=_gen(1), batch_size=batch_size)
        else:
            indices = sample_stratified_queries(grid_shape, k, generator=_gen(1), batch_size=batch_size)
        assert indices.shape == ((k,) if batch_size is None else (3, k))
        _assert_distinct_in_range(indices, total, k)


@pytest.mark.parametrize("coords_shape, k", [((300, 2), 1), ((300, 2), 37), ((300, 2), 299), ((2, 300, 3), 64)])
def test_mesh_draws_are_exactly_k_distinct_indices(coords_shape, k):
    coords = torch.rand(coords_shape, generator=_gen(0))
    indices = sample_stratified_queries(None, k, generator=_gen(1), coords=coords)
    assert indices.shape == (coords_shape[:-2] + (k,))
    _assert_distinct_in_range(indices, 300, k)


@pytest.mark.parametrize("grid_shape, k", [((64, 64), 2048), ((63, 65), 1000)])
@pytest.mark.parametrize("strategy", ["uniform", "stratified"])
def test_every_point_including_edges_has_inclusion_probability_k_over_n(grid_shape, k, strategy):
    draws, total = 3000, math.prod(grid_shape)
    if strategy == "uniform":
        indices = sample_uniform_queries(total, k, generator=_gen(7), batch_size=draws)
    else:
        indices = sample_stratified_queries(grid_shape, k, generator=_gen(7), batch_size=draws)
    frequency = torch.bincount(indices.flatten(), minlength=total).double() / draws
    p = k / total
    tolerance = 5 * math.sqrt(p * (1 - p) / draws)
    deviation = (frequency - p).abs().reshape(grid_shape)
    # The seed's block sampler starved the last block row/column; check them by name as well.
    assert deviation[-1, :].max() <= tolerance and deviation[:, -1].max() <= tolerance
    assert deviation.max() <= tolerance


@pytest.mark.parametrize("grid_shape", [(1, 1024), (1024,)])
def test_1d_grid_puts_one_sample_in_every_aligned_block_of_four(grid_shape):
    indices = sample_stratified_queries(grid_shape, 256, generator=_gen(3), batch_size=50)
    per_block = torch.zeros(50, 1024).scatter_(1, indices, 1.0).reshape(50, 256, 4).sum(-1)
    assert torch.equal(per_block, torch.ones(50, 256))


def test_64x64_grid_puts_one_sample_in_every_4x4_block():
    indices = sample_stratified_queries((64, 64), 256, generator=_gen(4), batch_size=50)
    hits = torch.zeros(50, 4096).scatter_(1, indices, 1.0).reshape(50, 16, 4, 16, 4)
    assert torch.equal(hits.sum((2, 4)), torch.ones(50, 16, 16))


def test_3d_grid_puts_one_sample_in_every_2x2x2_block():
    indices = sample_stratified_queries((16, 16, 16), 512, generator=_gen(5), batch_size=10)
    hits = torch.zeros(10, 4096).scatter_(1, indices, 1.0).reshape(10, 8, 2, 8, 2, 8, 2)
    assert torch.equal(hits.sum((2, 4, 6)), torch.ones(10, 8, 8, 8))


def _assert_cells_get_proportional_share(cell_of_point: torch.Tensor, indices: torch.Tensor, k: int) -> None:
    """Each Z-order cell holding m of the N points is a contiguous run of the curve, so it gets
    floor(m k / N) or ceil(m k / N) samples of a systematic draw."""
    total = cell_of_point.numel()
    points_per_cell = torch.bincount(cell_of_point).double()
    expected = points_per_cell * k / total
    for row in indices.reshape(-1, k):
        got = torch.bincount(cell_of_point[row], minlength=points_per_cell.numel()).double()
        assert torch.all(got >= torch.floor(expected)) and torch.all(got <= torch.ceil(expected))


def test_grid_divisible_by_nothing_spreads_samples_over_8x8_blocks():
    rows, cols = torch.meshgrid(torch.arange(63), torch.arange(65), indexing="ij")
    cell = ((rows // 8) * 9 + cols // 8).flatten()
    indices = sample_stratified_queries((63, 65), 1000, generator=_gen(6), batch_size=40)
    _assert_cells_get_proportional_share(cell, indices, 1000)


def test_mesh_samples_spread_over_dyadic_cells_of_the_bounding_box():
    coords = torch.rand(2000, 2, generator=_gen(8))
    coords[0], coords[1] = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0])  # bounding box = unit square
    cell_xy = (coords * 8).long().clamp(max=7)
    indices = sample_stratified_queries(None, 150, generator=_gen(9), coords=coords, batch_size=30)
    _assert_cells_get_proportional_share(cell_xy[:, 0] * 8 + cell_xy[:, 1], indices, 150)


def test_same_seed_same_indices_and_different_seed_different_indices():
    coords = torch.rand(2, 500, 2, generator=_gen(0))
    fields = {"u": coords.sum(-1, keepdim=True)}
    draws = {
        "uniform": lambda g: sample_uniform_queries(4096, 100, generator=g),
        "uniform_rows": lambda g: sample_uniform_queries(4096, 100, generator=g, batch_size=2),
        "grid": lambda g: sample_stratified_queries((64, 64), 100, generator=g),
        "mesh": lambda g: sample_stratified_queries(None, 100, generator=g, coords=coords),
        "apply": lambda g: apply_query_sampling(fields, coords, 100, "stratified", generator=g)[1],
    }
    for name, draw in draws.items():
        assert torch.equal(draw(_gen(11)), draw(_gen(11))), name
        assert not torch.equal(draw(_gen(11)), draw(_gen(12))), name


@pytest.mark.parametrize("strategy, grid_shape", [("uniform", None), ("stratified", (20, 25)), ("stratified", None)])
def test_apply_query_sampling_keeps_fields_and_coords_aligned(strategy, grid_shape):
    coords = torch.rand(4, 500, 2, generator=_gen(0))
    fields = {"u": coords.sum(-1, keepdim=True), "v": coords.prod(-1, keepdim=True)}
    shared_u, shared_x = apply_query_sampling(fields, coords, 60, strategy, grid_shape, generator=_gen(1))
    rows_u, rows_x = apply_query_sampling(fields, coords, 60, strategy, grid_shape, generator=_gen(1), per_sample=True)
    for sampled, x in ((shared_u, shared_x), (rows_u, rows_x)):
        assert x.shape == (4, 60, 2)
        torch.testing.assert_close(sampled["u"], x.sum(-1, keepdim=True))
        torch.testing.assert_close(sampled["v"], x.prod(-1, keepdim=True))
    positions = [torch.cdist(shared_x[b], coords[b]).argmin(-1) for b in range(4)]
    assert all(torch.equal(p, positions[0]) for p in positions)
    row_positions = [torch.cdist(rows_x[b], coords[b]).argmin(-1).sort().values for b in range(4)]
    assert all(not torch.equal(row_positions[0], p) for p in row_positions[1:])


def test_apply_query_sampling_accepts_and_returns_a_tensor():
    coords = torch.rand(2, 100, 1, generator=_gen(0))
    sampled, x = apply_query_sampling(coords * 3.0, coords, 10, generator=_gen(1))
    assert isinstance(sampled, torch.Tensor)
    torch.testing.assert_close(sampled, x * 3.0)


@pytest.mark.parametrize("strategy", ["uniform", "stratified"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_masked_sampling_takes_only_valid_points(strategy, per_sample):
    coords = torch.rand(3, 200, 2, generator=_gen(0))
    mask = torch.ones(3, 200, dtype=torch.bool)
    mask[1, 150:], mask[2, 120:] = False, False
    coords = coords.masked_fill(~mask[..., None], 1e6)  # padding far away must never be picked
    fields = {"u": coords[..., :1] + 1.0}
    kwargs = dict(strategy=strategy, generator=_gen(2), per_sample=per_sample, mask=mask)

    fields_s, coords_s, mask_s = apply_query_sampling(fields, coords, 100, **kwargs)
    assert mask_s is None and coords_s.shape == (3, 100, 2)
    assert coords_s.max() < 1.0
    torch.testing.assert_close(fields_s["u"], coords_s[..., :1] + 1.0)
    for row in coords_s:
        assert row.unique(dim=0).shape[0] == 100

    _, coords_s, mask_s = apply_query_sampling(fields, coords, 130, **kwargs)
    assert mask_s is None and coords_s.shape == (3, 120, 2)
    assert torch.equal(coords_s[2].unique(dim=0), coords[2, :120].unique(dim=0))

    fields_all, coords_all, mask_all = apply_query_sampling(fields, coords, 200, **kwargs)
    assert fields_all is fields and coords_all is coords and mask_all is mask


def test_masked_shared_draw_gives_identical_rows_when_masks_agree():
    coords = torch.rand(1, 300, 2, generator=_gen(0)).expand(3, -1, -1)
    mask = torch.ones(3, 300, dtype=torch.bool)
    mask[:, 250:] = False
    for strategy in ("uniform", "stratified"):
        _, x, _ = apply_query_sampling(coords, coords, 50, strategy, generator=_gen(1), mask=mask)
        assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])


def test_sampling_off_is_logged_once_per_setting(caplog, monkeypatch):
    monkeypatch.setattr(query_sampling, "_reported_unsampled", set())
    coords = torch.rand(2, 37, 2)
    with caplog.at_level(logging.INFO, logger="upt_lightning.query_sampling"):
        for _ in range(3):
            assert torch.equal(sample_uniform_queries(37, 50), torch.arange(37))
            assert torch.equal(sample_stratified_queries(None, 50, coords=coords[0]), torch.arange(37))
            assert apply_query_sampling(coords, coords, 50)[1] is coords
        sample_uniform_queries(37, 37)
    messages = [r.getMessage() for r in caplog.records if r.name == "upt_lightning.query_sampling"]
    assert len(messages) == 2
    assert "num_queries=50" in messages[0] and "37" in messages[0] and "all points" in messages[0]


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_bad_num_queries_raise(bad):
    with pytest.raises((ValueError, TypeError), match="num_queries"):
        sample_uniform_queries(100, bad)
    with pytest.raises((ValueError, TypeError), match="num_queries"):
        sample_stratified_queries((10, 10), bad)
    with pytest.raises((ValueError, TypeError), match="num_queries"):
        apply_query_sampling(torch.zeros(1, 100, 1), torch.zeros(1, 100, 2), bad)


def test_bad_arguments_raise_clear_errors():
    coords = torch.rand(2, 100, 2)
    with pytest.raises(ValueError, match="'random'.*uniform.*stratified"):
        apply_query_sampling(coords, coords, 10, strategy="random")
    with pytest.raises(ValueError, match=r"grid_shape \(9, 9\) has 81 points.*N=100"):
        apply_query_sampling(coords, coords, 10, "stratified", grid_shape=(9, 9))
    with pytest.raises(ValueError, match="coords must be"):
        apply_query_sampling(coords[0], coords[0], 10)
    with pytest.raises(ValueError, match="field 'u'"):
        apply_query_sampling({"u": torch.zeros(2, 99, 1)}, coords, 10)
    with pytest.raises(ValueError, match="mask must be a bool"):
        apply_query_sampling(coords, coords, 10, mask=torch.ones(2, 100))
    with pytest.raises(ValueError, match="without any valid point"):
        apply_query_sampling(coords, coords, 10, mask=torch.tensor([[True] * 100, [False] * 100]))
    with pytest.raises(ValueError, match="grid_shape .* or coords"):
        sample_stratified_queries(None, 10)
    with pytest.raises(ValueError, match="NaN"):
        sample_stratified_queries(None, 10, coords=torch.full((100, 2), math.nan))
    with pytest.raises(ValueError, match="total_points"):
        sample_uniform_queries(0, 10)
