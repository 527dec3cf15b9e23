"""1D viscous Burgers equation as PDEBench poses it.

    u_t + (u^2 / 2)_x = (nu / pi) u_xx,   x in (0, 1) periodic,

with PDEBench's ``Nu`` as ``nu``. Pseudo-spectral in space (2/3 dealiasing), ETDRK4 in time with a
Courant-limited step; batched over trajectories; float64 throughout.
"""

from __future__ import annotations

import math

import torch

from upt_lightning.data.solvers.etdrk4 import check_time_stepping, integrate
from upt_lightning.data.solvers.spectral import dealias_mask, project_dealiased, wavenumbers


def random_initial_conditions_1d(
    num: int,
    x: torch.Tensor,
    *,
    generator: torch.Generator,
    num_modes: int = 2,
    max_wavenumber: int = 4,
) -> torch.Tensor:
    """PDEBench-style random initial conditions, ``(num, X)`` float64 at the points ``x`` ``(X,)``.

    Each is ``sum_m A_m sin(2 pi k_m x + phi_m)`` over ``num_modes`` modes with integer ``k_m``
    uniform in ``1..max_wavenumber``, ``A_m`` uniform in [0, 1) and ``phi_m`` uniform in
    [0, 2 pi), so ``|u| <= num_modes``. (PDEBench's extra random abs/window operations are left
    out: they make the data non-smooth, which a spectral solver cannot represent.)
    """
    if num < 1 or num_modes < 1 or max_wavenumber < 1:
        raise ValueError(
            f"num ({num}), num_modes ({num_modes}) and max_wavenumber ({max_wavenumber}) must be >= 1"
        )
    k = torch.randint(1, max_wavenumber + 1, (num, num_modes, 1), generator=generator)
    amplitude = torch.rand(num, num_modes, 1, generator=generator, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(num, num_modes, 1, generator=generator, dtype=torch.float64)
    waves = amplitude * torch.sin(2 * math.pi * k.to(torch.float64) * x.to(torch.float64) + phase)
    return waves.sum(1)


def solve_burgers1d(
    u0: torch.Tensor,
    nu: float,
    *,
    dt_out: float,
    num_steps: int,
    cfl: float = 0.5,
    max_speed: float | None = None,
) -> torch.Tensor:
    """Solve from ``u0`` ``(B, X)`` (values on ``X`` equispaced points of (0, 1)).

    Returns ``(B, num_steps, X)`` float64 snapshots at ``t = n * dt_out``, ``n = 0..num_steps-1``
    (snapshot 0 is ``u0`` projected onto the dealiased modes; ``u0`` with more than a relative
    1e-6 of its norm above the 2/3 cut-off is rejected as unresolved). The internal step is the largest
    that divides ``dt_out`` with ``dt * max_speed * X <= cfl``; ``max_speed`` defaults to
    ``max |u0|``, a bound for all times by the maximum principle. Pass a fixed bound to make the
    step independent of which trajectories share a batch.
    """
    if u0.ndim != 2:
        raise ValueError(f"u0 must have shape (B, X), got {tuple(u0.shape)}")
    n = u0.shape[-1]
    if n < 4:
        raise ValueError(f"the grid needs at least 4 points, got {n}")
    check_time_stepping(u0, nu, dt_out, num_steps, cfl)
    speed = float(u0.abs().max()) if max_speed is None else float(max_speed)

    k = 2 * math.pi * wavenumbers(n, half=True)
    mask = dealias_mask(n, 1)
    linear = -(nu / math.pi) * k**2
    derivative = 1j * k * mask

    def nonlinear(v: torch.Tensor) -> torch.Tensor:
        # The state holds only dealiased modes, so u*u is exact on them.
        u = torch.fft.irfft(v, n=n)
        return -0.5 * derivative * torch.fft.rfft(u * u)

    v0 = project_dealiased(torch.fft.rfft(u0.to(torch.float64)), n, 1)
    max_dt = cfl / (n * speed) if speed > 0 else math.inf
    spectra = integrate(v0, linear, nonlinear, dt_out=dt_out, num_steps=num_steps, max_dt=max_dt)
    return torch.fft.irfft(spectra, n=n)

