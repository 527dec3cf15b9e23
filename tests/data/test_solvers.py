"""Pseudo-spectral Burgers solvers against exact solutions and exact properties of the PDEs."""

from __future__ import annotations

import math

import pytest
import torch

from upt_lightning.data.solvers.burgers1d import random_initial_conditions_1d, solve_burgers1d
from upt_lightning.data.solvers.burgers2d import (
    initial_fields_2d,
    random_initial_modes_2d,
    solve_burgers2d,
)
from upt_lightning.data.solvers.spectral import (
    cell_centres,
    dealias_cutoff,
    evaluate_series_at_points,
    evaluate_series_on_grid,
    series_coefficients_2d,
)


@pytest.fixture(autouse=True)
def _single_thread():
    """These problems are tiny: a second thread only adds synchronisation per FFT, which costs
    whole scheduler slices when other processes keep the cores busy."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def cole_hopf_1d(
    x: torch.Tensor, t: float, diffusivity: float, amplitudes: tuple[float, float] = (0.5, 0.3)
) -> torch.Tensor:
    """u = -2 D phi_x / phi, which solves u_t + u u_x = D u_xx when phi solves phi_t = D phi_xx;
    here phi = 1 + a1 e^{-D k1^2 t} cos(k1 x) + a2 e^{-D k2^2 t} cos(k2 x + 0.7), k1 = 2 pi, k2 = 4 pi."""
    k1, k2 = 2 * math.pi, 4 * math.pi
    a1 = amplitudes[0] * math.exp(-diffusivity * k1**2 * t)
    a2 = amplitudes[1] * math.exp(-diffusivity * k2**2 * t)
    phi = 1 + a1 * torch.cos(k1 * x) + a2 * torch.cos(k2 * x + 0.7)
    phi_x = -a1 * k1 * torch.sin(k1 * x) - a2 * k2 * torch.sin(k2 * x + 0.7)
    return -2 * diffusivity * phi_x / phi


def cole_hopf_2d(x: torch.Tensor, y: torch.Tensor, t: float, nu: float) -> torch.Tensor:
    """(u, v) = -2 nu grad(phi) / phi, phi a heat-equation solution with wave vectors (1,1) and (0,1)."""
    waves = [((1.0, 1.0), 0.25, 0.0), ((0.0, 1.0), 0.15, 0.4)]
    phi, phi_x, phi_y = torch.ones_like(x), torch.zeros_like(x), torch.zeros_like(x)
    for (kx, ky), amplitude, phase in waves:
        kx, ky = 2 * math.pi * kx, 2 * math.pi * ky
        a = amplitude * math.exp(-nu * (kx**2 + ky**2) * t)
        angle = kx * x + ky * y + phase
        phi = phi + a * torch.cos(angle)
        phi_x = phi_x - a * kx * torch.sin(angle)
        phi_y = phi_y - a * ky * torch.sin(angle)
    return torch.stack([-2 * nu * phi_x / phi, -2 * nu * phi_y / phi])


def grid_2d(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = cell_centres(n)
    return torch.meshgrid(x, x, indexing="ij")


def random_fields_2d(num: int, n: int, seed: int, amplitude: float = 0.5) -> torch.Tensor:
    modes = random_initial_modes_2d(num, generator=torch.Generator().manual_seed(seed), max_wavenumber=3)
    return initial_fields_2d(modes, n, amplitude)


def relative_max_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    return float((result - reference).abs().max() / reference.abs().max())


# ----------------------------------------------------------------------------------- 1D


def test_burgers1d_reproduces_cole_hopf_solution():
    nu, n = 0.1, 128
    x = cell_centres(n)
    diffusivity = nu / math.pi  # PDEBench's equation has nu/pi in front of u_xx
    result = solve_burgers1d(cole_hopf_1d(x, 0.0, diffusivity)[None], nu, dt_out=0.1, num_steps=11)
    exact = torch.stack([cole_hopf_1d(x, 0.1 * i, diffusivity) for i in range(11)])
    assert relative_max_error(result[0], exact) < 1e-6
    # The solution must actually evolve, or the comparison would prove nothing.
    assert relative_max_error(exact[0], exact[-1]) > 0.3


@pytest.mark.parametrize(
    "n, nu",
    [(256, 0.01), (64, 0.001)],  # the second is far from resolved: only exact dealiasing keeps it
)
def test_burgers1d_kinetic_energy_never_increases(n, nu):
    x = cell_centres(n)
    u0 = random_initial_conditions_1d(4, x, generator=torch.Generator().manual_seed(1))
    u = solve_burgers1d(u0, nu, dt_out=0.05, num_steps=11)
    energy = u.square().sum(-1)  # (B, T)
    assert (energy[:, 1:] <= energy[:, :-1] * (1 + 1e-12)).all()
    assert (energy[:, -1] < 0.99 * energy[:, 0]).all()


def test_burgers1d_halving_the_time_step_changes_little():
    x = cell_centres(256)
    u0 = random_initial_conditions_1d(3, x, generator=torch.Generator().manual_seed(2))
    coarse = solve_burgers1d(u0, 0.03, dt_out=0.1, num_steps=6, cfl=0.5)
    fine = solve_burgers1d(u0, 0.03, dt_out=0.1, num_steps=6, cfl=0.25)
    assert relative_max_error(coarse, fine) < 1e-6


def test_burgers1d_initial_conditions_follow_pdebench_recipe():
    x = cell_centres(512)
    u0 = random_initial_conditions_1d(64, x, generator=torch.Generator().manual_seed(3))
    assert u0.abs().max() <= 2.0  # two modes of amplitude < 1
    spectrum = torch.fft.rfft(u0).abs()
    assert spectrum[:, 5:].max() < 1e-9 * spectrum.max()  # wavenumbers 1..4 only
    assert spectrum[:, 0].max() < 1e-9 * spectrum.max()  # sines have zero mean


def test_burgers1d_rejects_bad_input():
    x = cell_centres(64)
    good = torch.sin(2 * math.pi * x)[None]
    with pytest.raises(ValueError, match="NaN"):
        solve_burgers1d(torch.full((1, 64), float("nan")), 0.01, dt_out=0.1, num_steps=2)
    with pytest.raises(ValueError, match="nu must be positive"):
        solve_burgers1d(good, 0.0, dt_out=0.1, num_steps=2)
    with pytest.raises(ValueError, match=r"shape \(B, X\)"):
        solve_burgers1d(good[0], 0.01, dt_out=0.1, num_steps=2)
    # One unresolved sample in a batch is enough to refuse the batch.
    unresolved = torch.cat([good, torch.sin(2 * math.pi * 30 * x)[None]])
    with pytest.raises(ValueError, match="above wavenumber 21.*finer grid"):
        solve_burgers1d(unresolved, 0.01, dt_out=0.1, num_steps=2)


# ----------------------------------------------------------------------------------- 2D


def test_burgers2d_reproduces_cole_hopf_solution():
    nu, n = 0.05, 40
    x, y = grid_2d(n)
    spectra = solve_burgers2d(cole_hopf_2d(x, y, 0.0, nu)[None], nu, dt_out=0.1, num_steps=6, cfl=0.25)
    result = torch.fft.irfft2(spectra[0], s=(n, n))
    exact = torch.stack([cole_hopf_2d(x, y, 0.1 * i, nu) for i in range(6)])
    assert relative_max_error(result, exact) < 1e-6
    assert relative_max_error(exact[0], exact[-1]) > 0.3


def test_burgers2d_reproduces_shear_flows_with_vorticity():
    """u = f(x), v = a f(x) with f solving 1D Burgers u_t + u u_x = nu u_xx is an exact solution
    (v is advected by u and diffuses like it); likewise with x and y and u and v swapped. Unlike
    Cole-Hopf flows these have vorticity, which exercises the rotational part of the advection."""
    nu, n, ratio = 0.05, 48, 0.6
    x, y = grid_2d(n)

    def shear(t: float) -> torch.Tensor:
        along_x = cole_hopf_1d(x, t, nu, amplitudes=(0.3, 0.15))
        along_y = cole_hopf_1d(y, t, nu, amplitudes=(0.3, 0.15))
        return torch.stack([torch.stack([along_x, ratio * along_x]), torch.stack([ratio * along_y, along_y])])

    spectra = solve_burgers2d(shear(0.0), nu, dt_out=0.1, num_steps=6, cfl=0.25)
    result = torch.fft.irfft2(spectra, s=(n, n))
    exact = torch.stack([shear(0.1 * i) for i in range(6)], 1)
    assert relative_max_error(result, exact) < 1e-6
    assert relative_max_error(exact[:, 0], exact[:, -1]) > 0.3


def test_burgers2d_single_small_mode_decays_like_heat_equation():
    nu, n, eps = 0.02, 16, 1e-8  # tiny amplitude: the quadratic term is ~eps^2, negligible
    x, y = grid_2d(n)
    k_u, k_v = (2.0, 1.0), (1.0, -3.0)
    u0 = eps * torch.stack([torch.sin(2 * math.pi * (k_u[0] * x + k_u[1] * y)),
                            torch.cos(2 * math.pi * (k_v[0] * x + k_v[1] * y))])
    spectra = solve_burgers2d(u0[None], nu, dt_out=0.25, num_steps=5)
    result = torch.fft.irfft2(spectra[0], s=(n, n))
    t = 0.25 * torch.arange(5, dtype=torch.float64)
    decay_u = torch.exp(-nu * (2 * math.pi) ** 2 * (k_u[0] ** 2 + k_u[1] ** 2) * t)
    decay_v = torch.exp(-nu * (2 * math.pi) ** 2 * (k_v[0] ** 2 + k_v[1] ** 2) * t)
    exact = torch.stack([decay_u[:, None, None] * u0[0], decay_v[:, None, None] * u0[1]], 1)
    assert relative_max_error(result, exact) < 1e-6
    assert decay_v[-1] < 0.01  # the decay itself is large, so a wrong rate cannot pass


def test_burgers2d_each_component_obeys_maximum_principle():
    n = 32
    spectra = solve_burgers2d(random_fields_2d(4, n, seed=3), 0.03, dt_out=0.05, num_steps=11)
    # Extremes on a 4x finer grid of the exact series approximate the continuous extremes.
    values = evaluate_series_on_grid(series_coefficients_2d(spectra, dealias_cutoff(n)), 4 * n, 4 * n)
    maxima, minima = values.amax(dim=(-2, -1)), values.amin(dim=(-2, -1))  # (B, T, 2)
    tolerance = 1e-6
    assert (maxima[:, 1:] <= maxima[:, :-1] + tolerance).all()
    assert (minima[:, 1:] >= minima[:, :-1] - tolerance).all()
    assert (maxima[:, -1] < maxima[:, 0] - 0.05).all()


def test_burgers2d_halving_the_time_step_changes_little():
    u0 = random_fields_2d(2, 32, seed=4)
    coarse = solve_burgers2d(u0, 0.03, dt_out=0.05, num_steps=6, cfl=0.5)
    fine = solve_burgers2d(u0, 0.03, dt_out=0.05, num_steps=6, cfl=0.25)
    assert relative_max_error(coarse, fine) < 1e-6
    assert relative_max_error(coarse[:, 0], coarse[:, -1]) > 0.1


def test_burgers2d_is_deterministic_by_seed():
    first, again, other = (random_fields_2d(2, 16, seed=s) for s in (7, 7, 8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert torch.equal(
        solve_burgers2d(first, 0.03, dt_out=0.05, num_steps=3),
        solve_burgers2d(again, 0.03, dt_out=0.05, num_steps=3),
    )


def test_initial_fields_are_scaled_to_the_amplitude_and_need_a_fine_enough_grid():
    fields = random_fields_2d(3, 16, seed=5, amplitude=0.7)
    peaks = fields.abs().amax(dim=(1, 2, 3))
    assert torch.allclose(peaks, torch.full_like(peaks, 0.7), rtol=1e-12)
    modes = random_initial_modes_2d(1, generator=torch.Generator().manual_seed(0), max_wavenumber=3)
    with pytest.raises(ValueError, match="resolution >= 10"):
        initial_fields_2d(modes, 8, 0.5)


# ----------------------------------------------------------------------- series evaluation


def test_series_evaluation_matches_direct_trigonometric_sum():
    n = 12
    x, y = grid_2d(n)
    field = 0.3 + torch.cos(2 * math.pi * (2 * x - y) + 0.2) - 0.5 * torch.sin(2 * math.pi * 3 * y)
    coeffs = series_coefficients_2d(torch.fft.rfft2(field), dealias_cutoff(n))
    points = torch.rand(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    px, py = points[:, 0], points[:, 1]
    direct = 0.3 + torch.cos(2 * math.pi * (2 * px - py) + 0.2) - 0.5 * torch.sin(2 * math.pi * 3 * py)
    assert torch.allclose(evaluate_series_at_points(coeffs, points), direct, atol=1e-12)
    fine_x, fine_y = grid_2d(30)
    fine = 0.3 + torch.cos(2 * math.pi * (2 * fine_x - fine_y) + 0.2) - 0.5 * torch.sin(2 * math.pi * 3 * fine_y)
    assert torch.allclose(evaluate_series_on_grid(coeffs, 30, 30), fine, atol=1e-12)


def test_series_of_a_solution_reproduces_grid_values_at_grid_points():
    n = 16
    spectra = solve_burgers2d(random_fields_2d(2, n, seed=6), 0.03, dt_out=0.05, num_steps=3)
    grid = torch.fft.irfft2(spectra, s=(n, n))  # (B, T, 2, n, n)
    coeffs = series_coefficients_2d(spectra, dealias_cutoff(n))
    # Odd refinement: every coarse cell centre is also a centre of the 3x finer grid.
    fine = evaluate_series_on_grid(coeffs, 3 * n, 3 * n)
    assert torch.allclose(fine[..., 1::3, 1::3], grid, atol=1e-12)
    # Scattered points that include grid points (i, j) -> ((i+0.5)/n, (j+0.5)/n).
    i, j = torch.tensor([0, 5, 15, 7]), torch.tensor([3, 0, 15, 9])
    on_grid = torch.stack([cell_centres(n)[i], cell_centres(n)[j]], 1)
    random = torch.rand(20, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    values = evaluate_series_at_points(coeffs, torch.cat([random, on_grid]))
    assert torch.allclose(values[..., 20:], grid[..., i, j], atol=1e-12)
