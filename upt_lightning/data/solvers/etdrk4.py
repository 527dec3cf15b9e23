"""Fourth-order exponential time differencing Runge-Kutta (ETDRK4) for ``dv/dt = L v + N(v)``.

``L`` is diagonal in Fourier space (here: viscous diffusion), so it is integrated exactly and the
stiffness of ``nu k^2`` at high wavenumbers puts no limit on the step; only the nonlinear term
(advection) limits it, through a Courant condition the callers choose. Scheme of Cox & Matthews
(2002) with the contour-integral coefficients of Kassam & Trefethen (2005), which avoid the
cancellation of the textbook formulas where ``h L`` is small.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Nonlinear = Callable[[torch.Tensor], torch.Tensor]

CONTOUR_POINTS = 32


class ETDRK4:
    """One ETDRK4 stepper for a fixed step ``dt`` and a real diagonal linear operator.

    ``linear``: real float64 tensor over the spectral layout (e.g. ``(n//2+1,)`` or ``(n, n//2+1)``),
    broadcast against states of shape ``(B, ..., *linear.shape)``.
    """

    def __init__(self, linear: torch.Tensor, dt: float) -> None:
        if not dt > 0:
            raise ValueError(f"time step must be positive, got {dt}")
        self.dt = float(dt)
        hl = self.dt * linear.to(torch.float64)
        roots = torch.exp(1j * math.pi * (torch.arange(1, CONTOUR_POINTS + 1) - 0.5) / CONTOUR_POINTS)
        lr = hl[..., None] + roots.to(torch.complex128)
        exp_lr = torch.exp(lr)

        def contour_mean(values: torch.Tensor) -> torch.Tensor:
            return self.dt * values.mean(-1).real

        self.e = torch.exp(hl)
        self.e_half = torch.exp(hl / 2)
        self.q = contour_mean((torch.exp(lr / 2) - 1) / lr)
        self.f1 = contour_mean((-4 - lr + exp_lr * (4 - 3 * lr + lr**2)) / lr**3)
        self.f2 = contour_mean((2 + lr + exp_lr * (lr - 2)) / lr**3)
        self.f3 = contour_mean((-4 - 3 * lr - lr**2 + exp_lr * (4 - lr)) / lr**3)

    def step(self, v: torch.Tensor, nonlinear: Nonlinear) -> torch.Tensor:
        """Advance the spectral state ``v`` by ``dt``."""
        nv = nonlinear(v)
        a = self.e_half * v + self.q * nv
        na = nonlinear(a)
        b = self.e_half * v + self.q * na
        nb = nonlinear(b)
        c = self.e_half * a + self.q * (2 * nb - nv)
        nc = nonlinear(c)
        return self.e * v + self.f1 * nv + 2 * self.f2 * (na + nb) + self.f3 * nc


def check_time_stepping(u0: torch.Tensor, nu: float, dt_out: float, num_steps: int, cfl: float) -> None:
    """Reject a non-finite initial condition and impossible time-stepping arguments early."""
    if not torch.isfinite(u0).all():
        raise ValueError("u0 contains NaN or Inf; the initial condition must be finite")
    if not nu > 0:
        raise ValueError(f"nu must be positive (viscous Burgers), got {nu}")
    if not dt_out > 0:
        raise ValueError(f"dt_out (time between snapshots) must be positive, got {dt_out}")
    if num_steps < 1:
        raise ValueError(f"num_steps (snapshots, including t = 0) must be >= 1, got {num_steps}")
    if not cfl > 0:
        raise ValueError(f"cfl (Courant number of the internal step) must be positive, got {cfl}")


def substeps_per_output(dt_out: float, max_dt: float) -> int:
    """Number of equal internal steps per output interval so that each is at most ``max_dt``."""
    if not math.isfinite(max_dt):
        return 1
    # The small slack keeps round-off in dt_out / max_dt from adding a step.
    return max(1, math.ceil(dt_out / max_dt * (1 - 1e-12)))


def integrate(
    v0: torch.Tensor,
    linear: torch.Tensor,
    nonlinear: Nonlinear,
    *,
    dt_out: float,
    num_steps: int,
    max_dt: float,
) -> torch.Tensor:
    """Snapshots of ``v`` at ``t = n * dt_out`` for ``n = 0..num_steps-1``.

    ``v0``: ``(B, *S)`` complex spectral state; returns ``(B, num_steps, *S)``. Each output interval
    is split into equal steps no longer than ``max_dt``. A non-finite state (a step far beyond the
    stability limit) raises ``FloatingPointError`` instead of writing garbage.
    """
    substeps = substeps_per_output(dt_out, max_dt)
    stepper = ETDRK4(linear, dt_out / substeps)
    out = v0.new_empty((v0.shape[0], num_steps, *v0.shape[1:]))
    out[:, 0] = v0
    v = v0
    for n in range(1, num_steps):
        for _ in range(substeps):
            v = stepper.step(v, nonlinear)
        if not torch.isfinite(torch.view_as_real(v)).all():
            raise FloatingPointError(
                f"solution became non-finite before t = {n * dt_out:g}: lower cfl "
                f"(internal step {stepper.dt:.3g}) or raise the viscosity"
            )
        out[:, n] = v
    return out
