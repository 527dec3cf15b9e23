"""2D incompressible Navier-Stokes in vorticity form on the periodic unit square (the FNO paper's setting).

    w_t + u . grad w = nu (w_xx + w_yy) + f,   u = (psi_y, -psi_x),   -(psi_xx + psi_yy) = w,
    f(x, y) = 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y)).

Pseudo-spectral with 2/3 dealiasing, ETDRK4 in time (viscosity exact, advection and forcing explicit),
batched over trajectories, float64, deterministic: a fixed internal step (``substeps`` per output
interval), whose Courant number is checked at every output time. The mean vorticity is zero and stays
zero (the forcing has no mean, advection is a divergence). Arrays are
``(..., X, Y)``: axis -2 is x.
"""

from __future__ import annotations

import math

import torch

from upt_lightning.data.solvers.etdrk4 import ETDRK4, check_time_stepping
from upt_lightning.data.solvers.spectral import cell_centres, dealias_cutoff, dealias_mask, wavenumbers

FORCING_AMPLITUDE = 0.1


def fno_forcing(n: int) -> torch.Tensor:
    """The FNO paper's forcing ``0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))`` on the cell centres, ``(n, n)``."""
    x = cell_centres(n)
    phase = 2 * math.pi * (x[:, None] + x[None, :])
    return FORCING_AMPLITUDE * (torch.sin(phase) + torch.cos(phase))


def random_vorticity_modes(num: int, *, generator: torch.Generator, max_wavenumber: int = 8,
                           alpha: float = 2.5, tau: float = 7.0) -> torch.Tensor:
    """Random smooth initial vorticities as truncated Fourier series, ``(num, 2K+1, K+1)`` complex128.

    The FNO paper's Gaussian random field on the unit torus, as its code draws it (standard deviation
    ``tau^(alpha - 1) (4 pi^2 |k|^2 + tau^2)^(-alpha / 2)`` per mode: ``7^1.5 (4 pi^2 |k|^2 + 49)^-1.25``), truncated
    at ``|kx|, |ky| <= K``; the mean mode is 0. Independent of any grid, so a finer copy of a trajectory
    starts from the same field (evaluate with ``spectral.evaluate_series_on_grid``).
    """
    if num < 1 or max_wavenumber < 1:
        raise ValueError(f"num ({num}) and max_wavenumber ({max_wavenumber}) must be >= 1")
    k = max_wavenumber
    size = (num, 2 * k + 1, k + 1)
    real = torch.randn(size, generator=generator, dtype=torch.float64)
    imag = torch.randn(size, generator=generator, dtype=torch.float64)
    kx = torch.arange(-k, k + 1, dtype=torch.float64)
    ky = torch.arange(0, k + 1, dtype=torch.float64)
    k2 = kx[:, None] ** 2 + ky[None, :] ** 2
    std = tau ** (alpha - 1) * (4 * math.pi**2 * k2 + tau**2) ** (-alpha / 2)
    std = torch.where(k2 > 0, std, torch.zeros_like(std))
    # A real field has c(-k) = conj(c(k)): on the ky = 0 row only kx >= 0 is free.
    coeffs = torch.complex(real, imag) * std / math.sqrt(2)
    row = coeffs[:, :, 0]
    coeffs[:, :, 0] = torch.where((kx < 0)[None, :], row.flip(-1).conj(), row)
    coeffs[:, k, 0] = 0
    return coeffs


def velocity_from_vorticity(spectrum: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid velocities ``(u, v)`` ``(..., n, n)`` of a vorticity given as ``rfft2`` spectrum ``(..., n, n//2+1)``."""
    kx = 2 * math.pi * wavenumbers(n)[:, None]
    ky = 2 * math.pi * wavenumbers(n, half=True)[None, :]
    k2 = kx**2 + ky**2
    psi = spectrum * torch.where(k2 > 0, 1 / k2.clamp_min(1e-300), torch.zeros_like(k2))
    u, v = torch.fft.irfft2(torch.stack([1j * ky * psi, -1j * kx * psi], 1), s=(n, n)).unbind(1)
    return u, v


def solve_ns2d(
    w0: torch.Tensor,
    nu: float,
    *,
    dt_out: float,
    num_steps: int,
    substeps: int,
    forcing: torch.Tensor | None = None,
    max_courant: float = 1.0,
) -> torch.Tensor:
    """Solve from the vorticity ``w0`` ``(B, N, N)`` on the cell centres of an N x N grid.

    ``forcing``: ``(N, N)`` grid values of ``f`` (``fno_forcing(N)`` for the FNO setting), None for none.
    Every output interval ``dt_out`` is split into ``substeps`` equal ETDRK4 steps: a fixed step, so a
    trajectory's values do not depend on which others share its batch. The Courant number
    ``dt * max(|u| + |v|) * N`` is checked at every output time and a value above ``max_courant`` raises
    ValueError naming the substeps that would do. The default 1.0 keeps ``|k| |u| dt`` at the 2/3 cut-off
    (``2 pi N / 3``) near 2.1, inside the explicit scheme's stability limit of about 2.8 on the imaginary axis. Returns the spectra ``(B, num_steps, N, N//2+1)``
    complex128 (``rfft2`` of the grid values) at ``t = n * dt_out``.
    """
    if w0.ndim != 3 or w0.shape[1] != w0.shape[2]:
        raise ValueError(f"w0 must have shape (B, N, N), got {tuple(w0.shape)}")
    n = w0.shape[-1]
    if n < 4:
        raise ValueError(f"the grid needs at least 4 points per side, got {n}")
    check_time_stepping(w0, nu, dt_out, num_steps, max_courant)
    if substeps < 1:
        raise ValueError(f"substeps (ETDRK4 steps per output interval) must be >= 1, got {substeps}")
    if forcing is not None and tuple(forcing.shape) != (n, n):
        raise ValueError(f"forcing must have the grid's shape ({n}, {n}), got {tuple(forcing.shape)}")

    kx = 2 * math.pi * wavenumbers(n)[:, None]
    ky = 2 * math.pi * wavenumbers(n, half=True)[None, :]
    k2 = kx**2 + ky**2
    mask = dealias_mask(n, 2)
    ddx, ddy = 1j * kx * mask, 1j * ky * mask
    inverse_laplacian = torch.where(k2 > 0, 1 / k2.clamp_min(1e-300), torch.zeros_like(k2))
    source = 0 if forcing is None else torch.fft.rfft2(forcing.to(torch.float64)) * mask

    def nonlinear(state: torch.Tensor) -> torch.Tensor:
        # The state holds only dealiased modes, so the quadratic advection is exact on them.
        psi = state * inverse_laplacian
        u, v, wx, wy = torch.fft.irfft2(torch.stack([ddy * psi, -ddx * psi, ddx * state, ddy * state], 1),
                                        s=(n, n)).unbind(1)
        return source - mask * torch.fft.rfft2(u * wx + v * wy)

    dt = dt_out / substeps
    stepper = ETDRK4(-nu * k2, dt)
    state = torch.fft.rfft2(w0.to(torch.float64)) * mask
    state[..., 0, 0] = 0  # zero mean vorticity
    out = state.new_empty((state.shape[0], num_steps, *state.shape[1:]))
    out[:, 0] = state
    for step in range(num_steps):
        u, v = velocity_from_vorticity(state, n)
        courant = dt * float((u.abs() + v.abs()).amax()) * n
        if not courant <= max_courant:
            needed = math.ceil(substeps * courant / max_courant)
            raise ValueError(f"the Courant number reached {courant:.2f} (> {max_courant}) at t = {step * dt_out:g}: "
                             f"use substeps >= {needed}")
        if step == num_steps - 1:
            break
        for _ in range(substeps):
            state = stepper.step(state, nonlinear)
        out[:, step + 1] = state
    return out


def check_resolved(max_wavenumber: int, resolution: int) -> None:
    """The initial modes must survive the 2/3 rule of the solver's grid."""
    if max_wavenumber > dealias_cutoff(resolution):
        raise ValueError(
            f"resolution {resolution} keeps wavenumbers up to {dealias_cutoff(resolution)} but the initial "
            f"vorticity goes up to {max_wavenumber}: use resolution >= {3 * max_wavenumber + 1}"
        )
