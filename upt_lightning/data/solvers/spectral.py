"""Fourier helpers shared by the pseudo-spectral solvers.

Conventions: the domain is the unit interval/square, periodic; a grid of ``n`` points per axis
sits at the cell centres ``(i + 0.5) / n``; wavenumbers are integers ``k`` (the angular
wavenumber is ``2 pi k``). A *truncated Fourier series* of a real 2D field is stored as
coefficients ``c`` of shape ``(..., 2K + 1, K + 1)`` for ``kx = -K..K`` and ``ky = 0..K`` with

    f(x, y) = Re sum_{kx, ky} w_ky c[kx, ky] exp(2 pi i (kx x + ky y)),   w_0 = 1, w_ky = 2 else,

so it can be evaluated exactly on any grid or at any scattered points.
"""

from __future__ import annotations

import math

import torch

POINT_CHUNK = 1024
UNRESOLVED_TOLERANCE = 1e-6


def cell_centres(n: int) -> torch.Tensor:
    """Cell-centred coordinates ``(i + 0.5) / n`` of an ``n``-point grid on (0, 1), float64 ``(n,)``."""
    return (torch.arange(n, dtype=torch.float64) + 0.5) / n


def dealias_cutoff(n: int) -> int:
    """Largest ``|k|`` kept by the 2/3 rule on an ``n``-point grid.

    With ``|k| <= K`` and ``3 K < n``, a product of two kept modes aliases only onto dropped modes,
    so quadratic terms are exact on the kept ones.
    """
    return (n - 1) // 3


def wavenumbers(n: int, *, half: bool = False) -> torch.Tensor:
    """Integer wavenumbers of ``torch.fft.fft`` (``half=False``) or ``rfft`` (``half=True``), float64."""
    if half:
        return torch.fft.rfftfreq(n, d=1.0 / n, dtype=torch.float64)
    return torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)


def dealias_mask(n: int, ndim: int) -> torch.Tensor:
    """0/1 float64 mask over the ``rfftn`` layout: ``(n//2+1,)`` for 1D, ``(n, n//2+1)`` for 2D."""
    cutoff = dealias_cutoff(n)
    last = (wavenumbers(n, half=True).abs() <= cutoff).to(torch.float64)
    if ndim == 1:
        return last
    if ndim == 2:
        first = (wavenumbers(n).abs() <= cutoff).to(torch.float64)
        return first[:, None] * last[None, :]
    raise ValueError(f"dealias_mask supports ndim 1 or 2, got {ndim}")


def project_dealiased(spectrum: torch.Tensor, n: int, ndim: int) -> torch.Tensor:
    """Zero the modes the 2/3 rule drops from ``rfftn`` spectra ``(B, ...)`` of ``n``-point grids.

    Raises ``ValueError`` when that removes more than a relative ``1e-6`` of the norm of any of the
    B samples: that field is not resolved on this grid and the solver would silently change it.
    """
    kept = spectrum * dealias_mask(n, ndim)
    dropped = (spectrum - kept).abs().square().flatten(1).sum(1)
    total = spectrum.abs().square().flatten(1).sum(1).clamp_min(1e-300)
    worst = (dropped / total).max().sqrt()
    if worst > UNRESOLVED_TOLERANCE:
        raise ValueError(
            f"an initial condition has {worst:.1e} of its norm above wavenumber "
            f"{dealias_cutoff(n)}, the dealiasing cut-off of {n} points: use a finer grid or a "
            "smoother initial condition"
        )
    return kept


def series_coefficients_2d(spectrum: torch.Tensor, cutoff: int) -> torch.Tensor:
    """Truncated Fourier series of the field whose grid values have ``rfft2`` = ``spectrum``.

    ``spectrum``: ``(..., n, n//2+1)`` complex, grid values on the cell centres of an ``n x n`` grid.
    Returns ``(..., 2*cutoff+1, cutoff+1)`` complex128 (see the module docstring). Modes above
    ``cutoff`` are dropped; ``cutoff`` must be below the Nyquist mode ``n/2``.
    """
    n = spectrum.shape[-2]
    if spectrum.shape[-1] != n // 2 + 1:
        raise ValueError(f"spectrum of shape {tuple(spectrum.shape)} is not the rfft2 of a square grid")
    if not 0 <= cutoff < n / 2:
        raise ValueError(f"cutoff {cutoff} must lie in [0, {n / 2}) for an {n}-point grid")
    rows = torch.cat([spectrum[..., n - cutoff :, : cutoff + 1], spectrum[..., : cutoff + 1, : cutoff + 1]], -2)
    kx = torch.arange(-cutoff, cutoff + 1, dtype=torch.float64)
    ky = torch.arange(0, cutoff + 1, dtype=torch.float64)
    # The DFT of samples at (j + 0.5)/n carries a half-cell phase e^{i pi k / n} per axis.
    phase = torch.exp(-1j * math.pi * (kx[:, None] + ky[None, :]) / n)
    return rows.to(torch.complex128) * phase / n**2


def _basis(k: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """``exp(2 pi i k x)`` as ``(len(k), len(coords))`` complex128."""
    return torch.exp(2j * math.pi * k[:, None] * coords.to(torch.float64)[None, :])


def _axes(coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cutoff = coeffs.shape[-1] - 1
    if coeffs.shape[-2] != 2 * cutoff + 1:
        raise ValueError(
            f"series coefficients must have shape (..., 2K+1, K+1), got {tuple(coeffs.shape)}"
        )
    kx = torch.arange(-cutoff, cutoff + 1, dtype=torch.float64)
    ky = torch.arange(0, cutoff + 1, dtype=torch.float64)
    weights = torch.full((cutoff + 1,), 2.0, dtype=torch.float64)
    weights[0] = 1.0
    return kx, ky, weights


def evaluate_series_on_grid(coeffs: torch.Tensor, nx: int, ny: int) -> torch.Tensor:
    """Values of the series on the cell centres of an ``nx x ny`` grid, ``(..., nx, ny)`` float64.

    Separable: ``(..., Kx, Ky) @ (Ky, ny)`` then ``(nx, Kx) @ (..., Kx, ny)``.
    """
    kx, ky, weights = _axes(coeffs)
    along_y = coeffs.to(torch.complex128) @ (weights[:, None] * _basis(ky, cell_centres(ny)))
    return (_basis(kx, cell_centres(nx)).transpose(0, 1) @ along_y).real


def evaluate_series_at_points(coeffs: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Values of the series at scattered ``points`` ``(P, 2)`` in [0, 1)^2, ``(..., P)`` float64.

    Exact (no interpolation); cost ``O(Kx Ky P)`` per leading index, done in chunks of points so
    the ``(..., Kx, chunk)`` intermediate stays small.
    """
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (P, 2), got {tuple(points.shape)}")
    if points.shape[0] == 0:
        raise ValueError("points is empty: give at least one point to evaluate the series at")
    kx, ky, weights = _axes(coeffs)
    coeffs = coeffs.to(torch.complex128)
    values = []
    for chunk in points.split(POINT_CHUNK):
        along_y = coeffs @ (weights[:, None] * _basis(ky, chunk[:, 1]))
        values.append((along_y * _basis(kx, chunk[:, 0])).sum(-2).real)
    return torch.cat(values, -1)
