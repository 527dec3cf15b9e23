"""Choosing which points the decoder is queried at, to cut decoder memory.

Two strategies draw ``k`` distinct point indices out of ``N``:

* ``"uniform"``: a uniformly random subset (every k-subset equally likely).
* ``"stratified"``: systematic sampling along a Z-order (Morton) curve. The points are ordered by
  the Morton code of their integer grid index (meshes: of their coordinates quantised to a fine
  lattice), a random integer start ``V ~ U{0..N-1}`` is drawn and positions
  ``(V + j * N) // k`` for ``j < k`` are taken along that ordering. This gives exactly ``k``
  distinct points, every point the inclusion probability ``k / N`` exactly, and one sample in
  every run of about ``N / k`` consecutive points of the curve, so each draw covers the whole
  domain (the seed's block sampler favoured some points and repeated others, so its sampled loss
  was a biased estimate of the full one).

When ``num_queries`` is not below the number of points, sampling is off and all points are used;
this is logged once per ``(N, num_queries)`` so a user sees it instead of silently paying for
  every point.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

log = logging.getLogger("upt_lightning.query_sampling")

STRATEGIES = ("uniform", "stratified")
_MESH_LATTICE_BITS = 16
_reported_unsampled: set[tuple[int, int]] = set()

Fields = Mapping[str, torch.Tensor] | torch.Tensor


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got the bool {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown query sampling strategy {strategy!r}; choose one of {STRATEGIES}")


@dataclass(frozen=True)
class QuerySampling:
    """Where the decoder losses are evaluated (the Hydra group ``sampling``): at ``num_queries`` points drawn
    by ``strategy`` ("uniform" or "stratified"), independently per sample (``per_sample``) or one set per
    batch (the seed's way); ``num_queries=None``: at every point. Checked on construction."""

    num_queries: int | None = None
    strategy: str = "uniform"
    per_sample: bool = True

    def __post_init__(self) -> None:
        if self.num_queries is not None:
            object.__setattr__(self, "num_queries", _positive_int("sampling.num_queries", self.num_queries))
        if self.strategy not in STRATEGIES:
            raise ValueError(f"sampling.strategy={self.strategy!r} is unknown; choose one of {list(STRATEGIES)}")
        if not isinstance(self.per_sample, bool):
            raise TypeError(f"sampling.per_sample must be true or false, got {self.per_sample!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def _report_unsampled(total_points: int, num_queries: int) -> None:
    if (total_points, num_queries) in _reported_unsampled:
        return
    _reported_unsampled.add((total_points, num_queries))
    log.warning(
        "query sampling is off: num_queries=%d is not below the %d available points, so all points "
        "are used; lower num_queries to sample",
        num_queries,
        total_points,
    )


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform [0, 1) float64 draws made where the generator lives, then moved to ``device``."""
    draw_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_device, dtype=torch.float64).to(device)


def _all_indices(total_points: int, device, batch_size: int | None) -> torch.Tensor:
    indices = torch.arange(total_points, device=device)
    return indices if batch_size is None else indices.expand(batch_size, total_points).clone()


def _morton_codes(ints: torch.Tensor, bits: int) -> torch.Tensor:
    """Interleave the bits of integer coordinates ``(..., N, D)`` into Z-order codes ``(..., N)``."""
    dims = ints.shape[-1]
    codes = torch.zeros(ints.shape[:-1], dtype=torch.int64, device=ints.device)
    for bit in range(bits):
        for axis in range(dims):
            codes |= ((ints[..., axis] >> bit) & 1) << (bit * dims + dims - 1 - axis)
    return codes


@functools.lru_cache(maxsize=16)
def _grid_codes(grid_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Morton codes ``(N,)`` of a row-major grid; cached because every training step needs them."""
    flat = torch.arange(math.prod(grid_shape), device=device)
    ints = torch.stack(torch.unravel_index(flat, grid_shape), dim=-1)
    return _morton_codes(ints, bits=max(max(grid_shape) - 1, 1).bit_length())


@functools.lru_cache(maxsize=16)
def _grid_order(grid_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.argsort(_grid_codes(grid_shape, device), stable=True)


def _mesh_codes(coords: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Morton codes ``(..., N)`` of scattered points ``(..., N, d)`` on a ``2**b`` lattice per axis.

    The lattice spans the bounding box of the valid points (``mask`` ``(..., N)``, True = real);
    padding points get the box's corner. One common scale for all axes keeps lattice cells cubic,
    so the curve's locality is the same along every axis.
    """
    valid = torch.ones_like(coords[..., 0], dtype=torch.bool) if mask is None else mask
    if not torch.isfinite(coords[valid]).all():
        raise ValueError("coords contain NaN or inf; stratified mesh sampling needs finite coordinates")
    bits = min(_MESH_LATTICE_BITS, 62 // coords.shape[-1])
    coords = coords.double()
    low = coords.masked_fill(~valid[..., None], math.inf).amin(dim=-2, keepdim=True)
    high = coords.masked_fill(~valid[..., None], -math.inf).amax(dim=-2, keepdim=True)
    coords = torch.where(valid[..., None], coords, low)
    span = (high - low).amax(dim=-1, keepdim=True)
    unit = (coords - low) / span.clamp_min(torch.finfo(torch.float64).tiny)
    ints = (unit * 2**bits).long().clamp_(0, 2**bits - 1)
    return _morton_codes(ints, bits)


def _systematic(order: torch.Tensor, counts: torch.Tensor, k: int, start: torch.Tensor) -> torch.Tensor:
    """Pick ``k`` of the first ``counts[b]`` entries of each row of ``order`` ``(B, N)``.

    ``start`` ``(B,)`` in [0, 1) becomes the integer offset ``V = floor(start * n)``; positions
    ``(V + j * n) // k`` are exact integers, hence distinct, below ``n`` and each hit with
    probability ``k / n``.
    """
    offset = (start * counts).long().clamp_(max=counts - 1)
    steps = torch.arange(k, device=order.device)
    positions = (offset[:, None] + steps[None, :] * counts[:, None]) // k
    return order.gather(1, positions)


def sample_uniform_queries(
    total_points: int,
    num_queries: int,
    device: torch.device | str | None = None,
    *,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Draw ``num_queries`` distinct indices of ``range(total_points)`` uniformly at random.

    Returns ``(Q,)`` long, or ``(batch_size, Q)`` with independent rows when ``batch_size`` is given.
    ``num_queries >= total_points`` returns every index (logged once).
    """
    total_points = _positive_int("total_points", total_points)
    num_queries = _positive_int("num_queries", num_queries)
    if batch_size is not None:
        batch_size = _positive_int("batch_size", batch_size)
    if num_queries >= total_points:
        _report_unsampled(total_points, num_queries)
        return _all_indices(total_points, device, batch_size)
    if batch_size is None:
        draw_device = generator.device if generator is not None else device
        return torch.randperm(total_points, generator=generator, device=draw_device)[:num_queries].to(device)
    scores = _rand((batch_size, total_points), generator, device)
    return scores.topk(num_queries, dim=1, largest=False).indices


def sample_stratified_queries(
    grid_shape: Sequence[int] | None,
    num_queries: int,
    device: torch.device | str | None = None,
    *,
    generator: torch.Generator | None = None,
    coords: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Draw ``num_queries`` distinct, evenly spread indices (systematic sampling along a Z-curve).

    Grids: ``grid_shape`` (any number of axes, row-major flattening, e.g. ``(1024,)``,
    ``(1, 1024)``, ``(63, 65)``, ``(16, 16, 16)``). Meshes: ``grid_shape=None`` and ``coords``
    ``(N, d)`` (one point set) or ``(B, N, d)`` (one per sample, giving ``(B, Q)``).

    Returns ``(Q,)`` long, or ``(B, Q)`` with independent rows when ``batch_size`` is given or
    ``coords`` is batched; on ``device`` (default: that of ``coords``, else CPU).
    """
    num_queries = _positive_int("num_queries", num_queries)
    if batch_size is not None:
        batch_size = _positive_int("batch_size", batch_size)
    if grid_shape is not None:
        grid_shape = tuple(_positive_int("grid_shape entries", size) for size in grid_shape)
        device = torch.device(device if device is not None else "cpu")
        order = _grid_order(grid_shape, device)[None]
        rows = batch_size
    elif coords is not None:
        if coords.ndim not in (2, 3):
            raise ValueError(f"coords must be (N, d) or (B, N, d), got shape {tuple(coords.shape)}")
        if coords.ndim == 3 and batch_size not in (None, coords.shape[0]):
            raise ValueError(f"batch_size={batch_size} differs from the {coords.shape[0]} samples in coords")
        device = torch.device(device) if device is not None else coords.device
        order = torch.argsort(_mesh_codes(coords), dim=-1, stable=True).reshape(-1, coords.shape[-2]).to(device)
        rows = coords.shape[0] if coords.ndim == 3 else batch_size
    else:
        raise ValueError("stratified sampling needs grid_shape (grids) or coords (meshes); both are None")
    total_points = order.shape[1]
    if num_queries >= total_points:
        _report_unsampled(total_points, num_queries)
        return _all_indices(total_points, device, rows)
    start = _rand((rows or 1,), generator, device)
    counts = torch.full((rows or 1,), total_points, device=device)
    picked = _systematic(order.expand(rows or 1, -1), counts, num_queries, start)
    return picked if rows is not None else picked[0]


def _take(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Points of ``values`` ``(B, N, C)`` at ``indices`` ``(Q,)`` (shared) or ``(B, Q)`` (per sample)."""
    if indices.ndim == 1:
        return values.index_select(1, indices)
    return values.gather(1, indices[..., None].expand(-1, -1, values.shape[-1]))


def _take_fields(fields: Fields, indices: torch.Tensor) -> Fields:
    if isinstance(fields, torch.Tensor):
        return _take(fields, indices)
    return {name: _take(values, indices) for name, values in fields.items()}


def _check_inputs(fields: Fields, coords: torch.Tensor, grid_shape, mask) -> tuple[int, int]:
    if coords.ndim != 3:
        raise ValueError(f"coords must be (B, N, d), got shape {tuple(coords.shape)}")
    batch, total = coords.shape[:2]
    named = {"fields": fields} if isinstance(fields, torch.Tensor) else dict(fields)
    if not named:
        raise ValueError("fields is empty; give at least one field (B, N, C_f)")
    for name, values in named.items():
        if values.ndim != 3 or tuple(values.shape[:2]) != (batch, total):
            raise ValueError(
                f"field {name!r} has shape {tuple(values.shape)}; expected (B, N, C_f) with "
                f"B={batch}, N={total} to match coords {tuple(coords.shape)}"
            )
    if grid_shape is not None and math.prod(grid_shape) != total:
        raise ValueError(f"grid_shape {tuple(grid_shape)} has {math.prod(grid_shape)} points but coords have N={total}")
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (batch, total)):
        raise ValueError(
            f"mask must be a bool tensor (B, N) = ({batch}, {total}), got {mask.dtype} {tuple(mask.shape)}"
        )
    return batch, total


def _sample_valid_points(fields, coords, num_queries, strategy, grid_shape, generator, per_sample, mask):
    """Masked sampling: the same number ``k`` of valid points from every sample (see apply_query_sampling)."""
    counts = mask.sum(dim=1)
    fewest, most = int(counts.min()), int(counts.max())
    if fewest == 0:
        raise ValueError("mask has a sample without any valid point; drop empty samples before sampling")
    if num_queries >= most:
        _report_unsampled(most, num_queries)
        return fields, coords, mask
    num_queries = min(num_queries, fewest)
    batch, total = mask.shape
    # One draw shared by all rows keeps per_sample=False meaning "same indices" whenever masks agree.
    draws = batch if per_sample else 1
    if strategy == "uniform":
        scores = _rand((draws, total), generator, coords.device).expand(batch, total)
        indices = scores.masked_fill(~mask, 2.0).topk(num_queries, dim=1, largest=False).indices
    else:
        if grid_shape is not None:
            codes = _grid_codes(tuple(grid_shape), coords.device).expand(batch, total)
        else:
            codes = _mesh_codes(coords, mask)
        order = codes.masked_fill(~mask, torch.iinfo(torch.int64).max).argsort(dim=1, stable=True)
        start = _rand((draws,), generator, coords.device).expand(batch)
        indices = _systematic(order, counts, num_queries, start)
    return _take_fields(fields, indices), _take(coords, indices), None


def apply_query_sampling(
    fields: Fields,
    coords: torch.Tensor,
    num_queries: int,
    strategy: str = "uniform",
    grid_shape: Sequence[int] | None = None,
    *,
    generator: torch.Generator | None = None,
    per_sample: bool = False,
    mask: torch.Tensor | None = None,
):
    """Keep ``num_queries`` points of ``fields`` and ``coords``.

    Args:
        fields: ``{name: (B, N, C_f)}`` or one ``(B, N, C)`` tensor (returned in the same form).
        coords: ``(B, N, d)`` point positions.
        num_queries: points to keep; ``>= N`` keeps all of them (logged once).
        strategy: ``"uniform"`` or ``"stratified"``; stratified orders grid points by ``grid_shape``
            and mesh points (``grid_shape=None``) by ``coords`` (by ``coords[0]`` when shared).
        per_sample: False (seed behaviour) shares one index set by the whole batch; True draws
            independent sets per sample.
        mask: ``(B, N)`` bool, True = real point, for padded meshes. Only valid points are drawn,
            ``k = min(num_queries, fewest valid points of a sample)`` per sample, so every kept
            point is valid. Since valid points differ between samples the index sets are per
            sample; with ``per_sample=False`` they come from one shared random draw.

    Returns:
        ``(fields (B, Q, C_f), coords (B, Q, d))``; with ``mask`` given a third item, the kept
        points' mask: None after sampling (all valid), the original mask when ``num_queries`` is
        not below the most valid points of a sample (nothing sampled).
    """
    check_strategy(strategy)
    num_queries = _positive_int("num_queries", num_queries)
    batch, total = _check_inputs(fields, coords, grid_shape, mask)
    if mask is not None:
        return _sample_valid_points(fields, coords, num_queries, strategy, grid_shape, generator, per_sample, mask)
    if num_queries >= total:
        _report_unsampled(total, num_queries)
        return fields, coords
    rows = batch if per_sample else None
    if strategy == "uniform":
        indices = sample_uniform_queries(total, num_queries, coords.device, generator=generator, batch_size=rows)
    elif grid_shape is not None:
        indices = sample_stratified_queries(grid_shape, num_queries, coords.device, generator=generator, batch_size=rows)
    else:
        mesh = coords if per_sample else coords[0]
        indices = sample_stratified_queries(None, num_queries, coords.device, generator=generator, coords=mesh)
    return _take_fields(fields, indices), _take(coords, indices)
