"""Trajectories of the built-in data sets, in memory, one at a time (solved in batches).

Everything random is drawn from one ``torch.Generator(seed)`` in a fixed order, so a seed fixes
the data whatever the batch size, and the 2D grid and mesh sets share their initial conditions.
The internal time step comes from an a-priori speed bound, not from the batch, for the same
reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from upt_lightning.data.solvers.burgers1d import random_initial_conditions_1d, solve_burgers1d
from upt_lightning.data.solvers.burgers2d import initial_fields_2d, random_initial_modes_2d, solve_burgers2d
from upt_lightning.data.solvers.ns2d import check_resolved, fno_forcing, random_vorticity_modes, solve_ns2d
from upt_lightning.data.solvers.spectral import (
    cell_centres,
    dealias_cutoff,
    evaluate_series_at_points,
    evaluate_series_on_grid,
    series_coefficients_2d,
)


def burgers1d_trajectories(
    num: int, seed: int, *, resolution: int, num_steps: int, dt_out: float, nu: float,
    num_modes: int, max_wavenumber: int, cfl: float, batch_size: int, select: Sequence[int] | None = None,
) -> Iterator[torch.Tensor]:
    """PDEBench-style 1D Burgers trajectories ``(T, X)`` float64 on ``cell_centres(resolution)``.

    ``select`` solves only those trajectories of the ``num`` (in its order), with the same values.
    """
    u0 = random_initial_conditions_1d(
        num, cell_centres(resolution), generator=torch.Generator().manual_seed(seed),
        num_modes=num_modes, max_wavenumber=max_wavenumber,
    )
    if select is not None:
        u0 = u0[list(select)]
    for batch in u0.split(batch_size):
        # Each of the num_modes sines has amplitude < 1, and max|u| never grows.
        yield from solve_burgers1d(
            batch, nu, dt_out=dt_out, num_steps=num_steps, cfl=cfl, max_speed=float(num_modes)
        )


def _spectra_2d(
    modes: torch.Tensor, *, resolution: int, num_steps: int, dt_out: float, nu: float,
    amplitude: float, cfl: float, batch_size: int,
) -> Iterator[torch.Tensor]:
    """Spectra ``(T, 2, N, N//2+1)`` of the trajectories started from ``modes``."""
    for batch in modes.split(batch_size):
        u0 = initial_fields_2d(batch, resolution, amplitude)
        # max|u| + max|v| <= 2 * amplitude at t = 0, and neither maximum grows.
        yield from solve_burgers2d(
            u0, nu, dt_out=dt_out, num_steps=num_steps, cfl=cfl, max_speed=2 * amplitude
        )


def burgers2d_grid_trajectories(
    num: int, seed: int, *, resolution: int, output_resolution: int, max_wavenumber: int,
    select: Sequence[int] | None = None, **solver,
) -> Iterator[torch.Tensor]:
    """2D Burgers trajectories ``(T, X, Y, 2)`` float64 on ``cell_centres(output_resolution)``^2.

    Solved on a ``resolution`` grid; a finer ``output_resolution`` is the exact truncated Fourier
    series of the same solution evaluated there (not a new simulation). ``solver`` holds
    ``num_steps, dt_out, nu, amplitude, cfl, batch_size``. ``select`` solves only those
    trajectories of the ``num`` (in its order), with the same values.
    """
    generator = torch.Generator().manual_seed(seed)
    modes = random_initial_modes_2d(num, generator=generator, max_wavenumber=max_wavenumber)
    if select is not None:
        modes = modes[list(select)]
    for spectrum in _spectra_2d(modes, resolution=resolution, **solver):
        if output_resolution == resolution:
            fields = torch.fft.irfft2(spectrum, s=(resolution, resolution))
        else:
            series = series_coefficients_2d(spectrum, dealias_cutoff(resolution))
            fields = evaluate_series_on_grid(series, output_resolution, output_resolution)
        yield fields.permute(0, 2, 3, 1)


def burgers2d_mesh_trajectories(
    num: int, seed: int, *, resolution: int, max_wavenumber: int, min_points: int, max_points: int, **solver
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The trajectories of :func:`burgers2d_grid_trajectories` (same seed, same initial conditions)
    at scattered points: ``(coords (P, 2) float32, fields (T, P, 2) float64)``.

    Each trajectory gets its own ``P`` (uniform in ``[min_points, max_points]``) points uniform in
    [0, 1)^2, where the truncated Fourier series is evaluated exactly.
    """
    generator = torch.Generator().manual_seed(seed)
    modes = random_initial_modes_2d(num, generator=generator, max_wavenumber=max_wavenumber)
    counts = torch.randint(min_points, max_points + 1, (num,), generator=generator).tolist()
    for count, spectrum in zip(counts, _spectra_2d(modes, resolution=resolution, **solver)):
        # Drawn in float32, the stored precision, so the values are exact at the stored points.
        points = torch.rand(count, 2, generator=generator)
        series = series_coefficients_2d(spectrum, dealias_cutoff(resolution))
        yield points, evaluate_series_at_points(series, points.double()).permute(0, 2, 1)


def ns2d_grid_trajectories(
    num: int, seed: int, *, resolution: int, output_resolution: int, max_wavenumber: int, num_steps: int,
    dt_out: float, nu: float, substeps: int, batch_size: int, select: Sequence[int] | None = None,
) -> Iterator[torch.Tensor]:
    """2D Navier-Stokes vorticity trajectories ``(T, X, Y, 1)`` float64 on ``cell_centres(output_resolution)``^2.

    The FNO paper's setting (forcing ``0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))``, random smooth initial
    vorticity), solved on a ``resolution`` grid with ``substeps`` ETDRK4 steps per snapshot; a finer
    ``output_resolution`` evaluates the exact truncated Fourier series of the same solution there.
    ``select`` solves only those trajectories of the ``num`` (in its order), with the same values: the
    step is fixed, so no trajectory depends on the others of its batch.
    """
    check_resolved(max_wavenumber, resolution)
    generator = torch.Generator().manual_seed(seed)
    modes = random_vorticity_modes(num, generator=generator, max_wavenumber=max_wavenumber)
    if select is not None:
        modes = modes[list(select)]
    forcing = fno_forcing(resolution)
    for batch in modes.split(batch_size):
        w0 = evaluate_series_on_grid(batch, resolution, resolution)
        spectra = solve_ns2d(w0, nu, dt_out=dt_out, num_steps=num_steps, substeps=substeps, forcing=forcing)
        for spectrum in spectra:
            if output_resolution == resolution:
                fields = torch.fft.irfft2(spectrum, s=(resolution, resolution))
            else:
                series = series_coefficients_2d(spectrum, dealias_cutoff(resolution))
                fields = evaluate_series_on_grid(series, output_resolution, output_resolution)
            yield fields[..., None]
