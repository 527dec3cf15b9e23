"""2D viscous Burgers equations for the velocity (u, v) on the periodic unit square.

    u_t + u u_x + v u_y = nu (u_xx + u_yy),   v_t + u v_x + v v_y = nu (v_xx + v_yy).

Pseudo-spectral with 2/3 dealiasing, ETDRK4 in time with a Courant-limited step, batched over
trajectories, float64. The advection is evaluated in the equivalent form
``(u . grad) u = grad(|u|^2 / 2) - (v w, -u w)`` with ``w = v_x - u_y``, which needs 3 inverse
and 3 forward FFTs per evaluation instead of 6 and 2. Arrays are ``(..., X, Y)``: axis -2 is x.
"""

from __future__ import annotations

import math

import torch

from upt_lightning.data.solvers.etdrk4 import check_time_stepping, integrate
from upt_lightning.data.solvers.spectral import (
    dealias_cutoff,
    dealias_mask,
    evaluate_series_on_grid,
    project_dealiased,
    wavenumbers,
)


def random_initial_modes_2d(
    num: int, *, generator: torch.Generator, max_wavenumber: int = 3
) -> torch.Tensor:
    """Random smooth velocity fields as truncated Fourier series, ``(num, 2, 2K+1, K+1)`` complex128.

    Modes ``|kx|, |ky| <= K = max_wavenumber`` except the mean get complex Gaussian coefficients
    scaled by ``1 / (1 + |k|^2)``, so low modes dominate. Independent of any grid: evaluate with
    :func:`initial_fields_2d`.
    """
    if num < 1 or max_wavenumber < 1:
        raise ValueError(f"num ({num}) and max_wavenumber ({max_wavenumber}) must be >= 1")
    size = (num, 2, 2 * max_wavenumber + 1, max_wavenumber + 1)
    real = torch.randn(size, generator=generator, dtype=torch.float64)
    imag = torch.randn(size, generator=generator, dtype=torch.float64)
    kx = torch.arange(-max_wavenumber, max_wavenumber + 1, dtype=torch.float64)
    ky = torch.arange(0, max_wavenumber + 1, dtype=torch.float64)
    k2 = kx[:, None] ** 2 + ky[None, :] ** 2
    weight = torch.where(k2 > 0, 1 / (1 + k2), torch.zeros_like(k2))
    return torch.complex(real, imag) * weight


def initial_fields_2d(modes: torch.Tensor, resolution: int, amplitude: float) -> torch.Tensor:
    """Grid values ``(B, 2, N, N)`` float64 of ``modes`` ``(B, 2, 2K+1, K+1)`` on an N x N grid.

    Each trajectory is scaled so that ``max(|u|, |v|)`` over the grid equals ``amplitude``; then
    ``|u| + |v| <= 2 * amplitude`` bounds the speed for the Courant condition at all times.
    """
    cutoff = modes.shape[-1] - 1
    if cutoff > dealias_cutoff(resolution):
        raise ValueError(
            f"resolution {resolution} keeps wavenumbers up to {dealias_cutoff(resolution)} but the "
            f"initial modes go up to {cutoff}: use resolution >= {3 * cutoff + 1}"
        )
    if not amplitude > 0:
        raise ValueError(f"amplitude must be positive, got {amplitude}")
    fields = evaluate_series_on_grid(modes, resolution, resolution)
    peak = fields.abs().amax(dim=(-3, -2, -1), keepdim=True).clamp_min(1e-300)
    return fields * (amplitude / peak)


def solve_burgers2d(
    u0: torch.Tensor,
    nu: float,
    *,
    dt_out: float,
    num_steps: int,
    cfl: float = 0.5,
    max_speed: float | None = None,
) -> torch.Tensor:
    """Solve from ``u0`` ``(B, 2, N, N)`` (u and v on the cell centres of an N x N grid).

    Returns the spectra ``(B, num_steps, 2, N, N//2+1)`` complex128 (``rfft2`` of the grid values;
    ``torch.fft.irfft2(s, s=(N, N))`` gives the fields) at ``t = n * dt_out``. Keeping the spectra
    lets callers evaluate the exact truncated series on finer grids or scattered points. The
    internal step divides ``dt_out`` with ``dt * max_speed * N <= cfl``, where ``max_speed``
    defaults to ``max|u0| + max|v0|`` (each component obeys a maximum principle).
    """
    if u0.ndim != 4 or u0.shape[1] != 2 or u0.shape[2] != u0.shape[3]:
        raise ValueError(f"u0 must have shape (B, 2, N, N), got {tuple(u0.shape)}")
    n = u0.shape[-1]
    if n < 4:
        raise ValueError(f"the grid needs at least 4 points per side, got {n}")
    check_time_stepping(u0, nu, dt_out, num_steps, cfl)
    if max_speed is None:
        max_speed = float(u0[:, 0].abs().max() + u0[:, 1].abs().max())

    kx = 2 * math.pi * wavenumbers(n)[:, None]
    ky = 2 * math.pi * wavenumbers(n, half=True)[None, :]
    mask = dealias_mask(n, 2)
    linear = -nu * (kx**2 + ky**2)
    ddx, ddy = 1j * kx * mask, 1j * ky * mask

    def nonlinear(state: torch.Tensor) -> torch.Tensor:
        # The state holds only dealiased modes, so every quadratic product is exact on them.
        vorticity = ddx * state[:, 1] - ddy * state[:, 0]
        u, v, w = torch.fft.irfft2(torch.cat([state, vorticity[:, None]], 1), s=(n, n)).unbind(1)
        energy, vw, uw = torch.fft.rfft2(torch.stack([0.5 * (u * u + v * v), v * w, u * w], 1)).unbind(1)
        return -torch.stack([ddx * energy - mask * vw, ddy * energy + mask * uw], 1)

    v0 = project_dealiased(torch.fft.rfft2(u0.to(torch.float64)), n, 2)
    max_dt = cfl / (n * max_speed) if max_speed > 0 else math.inf
    return integrate(v0, linear, nonlinear, dt_out=dt_out, num_steps=num_steps, max_dt=max_dt)
