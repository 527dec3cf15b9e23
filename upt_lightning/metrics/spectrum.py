"""Radially binned Fourier spectra of grid errors, the ingredients of PDEBench's fRMSE.

PDEBench (``metric_func``, 1D) takes ``F = rfft(pred - target)`` per sample and channel and
reports, per wavenumber k = 0 .. nx/2,

    fRMSE_k = sqrt(mean over samples of |F_k|^2) / nx

then averages fRMSE_k over the wavenumbers of a band: low k < iLow, mid iLow <= k < iHigh,
high k >= iHigh (iLow = 4, iHigh = 12). An error A sin(2 pi k x) thus gives fRMSE_k = A / 2.

In nD every Fourier mode is assigned to the shell floor(|k|) of its integer wavenumber vector,
and a shell's power sums |F_k|^2 over a half of the spectrum: each mode gets weight 1/2 because
its conjugate partner -k of a real field carries the same power, except self-conjugate modes
(every component 0 or n/2), which get weight 1. In 1D this is exactly the rfft above.
Deviations from PDEBench's 2D/3D code, and why: it visits only 0 <= k_x < nx/2, 0 <= k_y < ny/2,
so a mode such as sin(2 pi (2x - 3y)) is invisible to it, and its shells stop at min(n)/2 - 1
while its 1D shells reach nx/2. Here shells 0 .. min(n)//2 are kept in every dimension (the
last complete sphere; corner modes beyond it are left out, as in PDEBench), and PDEBench's
domain-length factors Lx, Ly, Lz take their default 1.
"""

from __future__ import annotations

import torch


def num_shells(grid_shape: tuple[int, ...]) -> int:
    """Number of radial shells kept: 0 .. min(grid_shape) // 2."""
    return min(grid_shape) // 2 + 1


def shell_index_and_weight(grid_shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Shell floor(|k|) (N,) long and half-spectrum weight (N,) of every mode of ``fftn``, row-major."""
    wavenumbers = [torch.fft.fftfreq(n, d=1.0 / n, device=device).round().long() for n in grid_shape]
    grids = torch.meshgrid(*wavenumbers, indexing="ij")
    squared_norm = sum(k.square() for k in grids).reshape(-1)
    # sqrt of an integer is exact at perfect squares in float64, so floor() lands on the right shell.
    shell = squared_norm.double().sqrt().floor().long()
    self_conjugate = torch.ones_like(shell, dtype=torch.bool)
    for k, n in zip(grids, grid_shape):
        self_conjugate &= ((2 * k) % n == 0).reshape(-1)
    weight = torch.where(self_conjugate, 1.0, 0.5).double()
    return shell, weight


def shell_power(error: torch.Tensor, grid_shape: tuple[int, ...]) -> torch.Tensor:
    """Half-spectrum power |F|^2 of the error summed per radial shell: (S, N, C) -> (S, M, C).

    M = num_shells(grid_shape); F = fftn of the error over the grid axes (unnormalised, as
    PDEBench), so that sqrt(power) / N is PDEBench's per-wavenumber fRMSE of one sample.
    """
    samples, points, channels = error.shape
    field = error.reshape(samples, *grid_shape, channels)
    spectrum = torch.fft.fftn(field, dim=tuple(range(1, len(grid_shape) + 1)))
    power = spectrum.abs().square().reshape(samples, points, channels).double()
    shell, weight = shell_index_and_weight(grid_shape, error.device)
    kept = shell < num_shells(grid_shape)
    binned = torch.zeros(samples, num_shells(grid_shape), channels, dtype=power.dtype, device=error.device)
    return binned.index_add_(1, shell[kept], power[:, kept] * weight[kept, None])


def band_slices(grid_shape: tuple[int, ...], f_low: int, f_high: int) -> dict[str, slice]:
    """Shell ranges of the fRMSE bands {"low", "mid", "high"}; a band without shells is left out.

    PDEBench would report NaN (the mean of nothing) for a band that a coarse grid lacks.
    """
    count = num_shells(grid_shape)
    bands = {"low": slice(0, f_low), "mid": slice(f_low, f_high), "high": slice(f_high, count)}
    return {name: band for name, band in bands.items() if band.start < min(band.stop, count)}


def band_means(shell_rmse: torch.Tensor, bands: dict[str, slice]) -> dict[str, torch.Tensor]:
    """Average per-shell fRMSE (..., M, C) over each band's shells -> {band: (..., C)}."""
    return {name: shell_rmse[..., band, :].mean(dim=-2) for name, band in bands.items()}

