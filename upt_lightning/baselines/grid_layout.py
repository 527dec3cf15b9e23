"""Between the pipeline's point lists and a grid model's channel-first tensors, and onto finer grids.

Grid batches hold the points of a regular grid in row-major order: fields (B, N, C) with
N = prod(grid_shape). Convolutional and spectral models want (B, C, *grid_shape) instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def to_grid(points: torch.Tensor, grid_shape: Sequence[int]) -> torch.Tensor:
    """(B, N, C) values at row-major grid points -> (B, C, *grid_shape)."""
    batch, count, channels = points.shape
    if count != math.prod(grid_shape):
        raise ValueError(f"{count} points do not fill a grid of shape {tuple(grid_shape)}")
    return points.transpose(1, 2).reshape(batch, channels, *grid_shape)


def to_points(grid: torch.Tensor) -> torch.Tensor:
    """(B, C, *grid_shape) -> (B, N, C) in row-major order, the inverse of :func:`to_grid`."""
    return grid.flatten(2).transpose(1, 2)


def grid_axes(points: torch.Tensor, what: str) -> list[torch.Tensor]:
    """Coordinates along each axis of the regular grid that ``points`` (B, N, d) list in row-major order.

    Returns d ascending tensors (n_i,). ValueError naming ``what`` when the points are not such a grid, or
    not the same grid for every sample.
    """
    first = points[0]
    axes = [torch.unique(first[:, axis]) for axis in range(first.shape[1])]
    rebuilt = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, first.shape[1])
    if rebuilt.shape != first.shape or not torch.equal(rebuilt, first) or not bool((points == first).all()):
        raise ValueError(
            f"{what} must list the points of one regular grid in row-major order, the same for every sample "
            f"(a grid model evaluates whole grids, not scattered points)"
        )
    return axes


def _resample_axis(values: torch.Tensor, dim: int, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Trigonometric interpolation along ``dim`` from the equispaced periodic ``source`` points to ``target``."""
    n, m = source.numel(), target.numel()
    if n == m and torch.equal(source, target):
        return values
    if n < 2 or m < n:
        raise ValueError(f"cannot resample {n} grid points onto {m}: the target grid must be at least as fine")
    period = float(source[-1] - source[0]) * n / (n - 1)
    if not math.isclose(float(target[-1] - target[0]) * m / (m - 1), period, rel_tol=1e-4):
        raise ValueError(f"the target grid ({m} points) does not span the source grid's period {period:g}")
    shift = float(target[0] - source[0]) / period  # where the target grid starts, in periods
    wavenumbers = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)
    positions = torch.arange(n)
    weights = torch.ones(n, dtype=torch.float64)
    if n % 2 == 0:
        # The Nyquist mode -n/2 of a real signal is its own mirror image: give half to +n/2 and half to -n/2,
        # so the interpolant stays real between the source points.
        wavenumbers = torch.cat([wavenumbers, torch.tensor([n / 2], dtype=torch.float64)])
        positions = torch.cat([positions, torch.tensor([n // 2])])
        weights[n // 2] = 0.5
        weights = torch.cat([weights, torch.tensor([0.5], dtype=torch.float64)])
    factors = weights * torch.exp(2j * math.pi * wavenumbers * shift)
    shape = [1] * values.ndim
    shape[dim] = -1
    spectrum = torch.fft.fft(values, dim=dim).index_select(dim, positions.to(values.device))
    spectrum = spectrum * factors.to(spectrum.dtype).to(values.device).reshape(shape)
    padded_shape = list(values.shape)
    padded_shape[dim] = m
    padded = spectrum.new_zeros(padded_shape).index_add_(dim, (wavenumbers.long() % m).to(values.device), spectrum)
    return torch.fft.ifft(padded, dim=dim).real * (m / n)


def fourier_resample(grid: torch.Tensor, source_axes: Sequence[torch.Tensor],
                     target_axes: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, C, *n) values on the periodic grid ``source_axes`` -> (B, C, *m) on the finer grid ``target_axes``.

    Band-limited (trigonometric) interpolation, axis by axis, placed by the grids' coordinates: exact for
    fields that are Fourier series of the coarse grid's wavenumbers, like the built-in data, and the
    periodicity that an FNO's own Fourier layers assume.
    """
    if len(source_axes) != grid.ndim - 2 or len(target_axes) != len(source_axes):
        raise ValueError(f"a (B, C, *grid) tensor of {grid.ndim - 2} axes needs that many source and target axes")
    out = grid
    for axis, (source, target) in enumerate(zip(source_axes, target_axes)):
        out = _resample_axis(out, axis + 2, source.double(), target.double())
    return out.to(grid.dtype)
