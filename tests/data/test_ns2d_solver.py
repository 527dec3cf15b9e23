"""2D Navier-Stokes (vorticity form) solver: exact solutions, invariants, convergence in time."""

from __future__ import annotations

import math

import pytest
import torch

from upt_lightning.data.solvers.ns2d import fno_forcing, random_vorticity_modes, solve_ns2d, velocity_from_vorticity
from upt_lightning.data.solvers.spectral import cell_centres, evaluate_series_on_grid

N = 32


def grid(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    x = cell_centres(n)
    return torch.meshgrid(x, x, indexing="ij")


def fields(spectra: torch.Tensor, n: int = N) -> torch.Tensor:
    return torch.fft.irfft2(spectra, s=(n, n))


def random_start(num: int = 3, seed: int = 1, n: int = N) -> torch.Tensor:
    modes = random_vorticity_modes(num, generator=torch.Generator().manual_seed(seed), max_wavenumber=6)
    return evaluate_series_on_grid(modes, n, n)


def test_a_single_mode_without_forcing_decays_at_the_viscous_rate():
    """One wavevector: advection vanishes (u is parallel to the level lines), so w = w0 exp(-nu |2 pi k|^2 t)."""
    x, y = grid()
    w0 = torch.stack([torch.sin(2 * math.pi * (2 * x + y)), torch.cos(2 * math.pi * (x - 3 * y))])
    nu, dt_out = 1e-2, 0.5
    got = fields(solve_ns2d(w0, nu, dt_out=dt_out, num_steps=5, substeps=4))
    t = dt_out * torch.arange(5, dtype=torch.float64)
    rates = torch.tensor([5.0, 10.0], dtype=torch.float64) * 4 * math.pi**2 * nu
    expected = w0[:, None] * torch.exp(-rates[:, None] * t[None, :])[..., None, None]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_the_fno_forcing_drives_a_flow_at_rest_to_its_steady_kolmogorov_state():
    """f has one wavevector (1, 1): from rest, w = f / (8 pi^2 nu) (1 - exp(-8 pi^2 nu t)) exactly."""
    nu = 1e-3
    forcing = fno_forcing(N)
    got = fields(solve_ns2d(torch.zeros(1, N, N, dtype=torch.float64), nu, dt_out=2.0, num_steps=4, substeps=8,
                            forcing=forcing))
    rate = 8 * math.pi**2 * nu
    t = 2.0 * torch.arange(4, dtype=torch.float64)
    expected = (forcing / rate)[None, None] * (1 - torch.exp(-rate * t))[None, :, None, None]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-8)
    x, y = grid()
    torch.testing.assert_close(forcing, 0.1 * (torch.sin(2 * math.pi * (x + y)) + torch.cos(2 * math.pi * (x + y))))


def test_the_mean_vorticity_stays_zero_with_and_without_forcing():
    w0 = random_start()
    for forcing in (None, fno_forcing(N)):
        w = fields(solve_ns2d(w0, 1e-3, dt_out=1.0, num_steps=6, substeps=8, forcing=forcing))
        assert float(w.mean((-2, -1)).abs().max()) < 1e-13
        assert float(w.std()) > 0.05  # and the flow is not trivially zero


def test_enstrophy_never_increases_without_forcing():
    w = fields(solve_ns2d(random_start(), 1e-3, dt_out=0.5, num_steps=12, substeps=4))
    enstrophy = (w**2).mean((-2, -1))  # (B, T)
    assert bool((enstrophy[:, 1:] <= enstrophy[:, :-1] * (1 + 1e-12)).all())
    assert float((enstrophy[:, -1] / enstrophy[:, 0]).max()) < 0.9  # viscosity removes a visible part


def test_halving_the_time_step_changes_the_solution_at_fourth_order():
    w0, forcing = random_start(), fno_forcing(N)

    def run(substeps):
        return fields(solve_ns2d(w0, 1e-3, dt_out=1.0, num_steps=6, substeps=substeps, forcing=forcing))

    coarse, fine, finest = run(8), run(16), run(32)
    step_error = float((coarse - fine).norm() / fine.norm())
    assert step_error < 1e-6
    assert step_error / float((fine - finest).norm() / finest.norm()) > 8  # ETDRK4: 16 in theory


def test_velocity_is_divergence_free_and_its_curl_is_the_vorticity():
    w0 = random_start(1)
    spectrum = torch.fft.rfft2(w0)
    u, v = velocity_from_vorticity(spectrum, N)
    k = 2 * math.pi * torch.fft.fftfreq(N, d=1.0 / N, dtype=torch.float64)
    ky = 2 * math.pi * torch.fft.rfftfreq(N, d=1.0 / N, dtype=torch.float64)
    u_hat, v_hat = torch.fft.rfft2(u), torch.fft.rfft2(v)
    divergence = torch.fft.irfft2(1j * k[:, None] * u_hat + 1j * ky[None, :] * v_hat, s=(N, N))
    curl = torch.fft.irfft2(1j * k[:, None] * v_hat - 1j * ky[None, :] * u_hat, s=(N, N))
    assert float(divergence.abs().max()) < 1e-12
    torch.testing.assert_close(curl, w0 - w0.mean(), rtol=0, atol=1e-12)


def test_a_too_long_step_is_refused_with_the_substeps_that_would_do():
    with pytest.raises(ValueError, match=r"Courant number reached .* use substeps >= \d+"):
        solve_ns2d(10 * random_start(1), 1e-3, dt_out=1.0, num_steps=3, substeps=1)


def test_random_initial_vorticity_is_seeded_real_and_mean_free():
    a = random_vorticity_modes(2, generator=torch.Generator().manual_seed(5), max_wavenumber=4)
    b = random_vorticity_modes(2, generator=torch.Generator().manual_seed(5), max_wavenumber=4)
    torch.testing.assert_close(a, b)
    w = evaluate_series_on_grid(a, 16, 16)
    assert float(w.mean((-2, -1)).abs().max()) < 1e-14 and float(w.std()) > 0
