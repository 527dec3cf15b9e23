"""Pseudo-spectral solvers for periodic Burgers problems (pure torch, batched, float64).

Each solver takes initial conditions on a cell-centred grid of the unit interval/square and
returns snapshots at equal output intervals; ``spectral`` evaluates 2D solutions exactly on other
grids and at scattered points; ``trajectories`` produces the built-in data sets from a seed.
"""

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
from upt_lightning.data.solvers.trajectories import (
    burgers1d_trajectories,
    burgers2d_grid_trajectories,
    burgers2d_mesh_trajectories,
)

__all__ = [
    "burgers1d_trajectories",
    "burgers2d_grid_trajectories",
    "burgers2d_mesh_trajectories",
    "cell_centres",
    "dealias_cutoff",
    "evaluate_series_at_points",
    "evaluate_series_on_grid",
    "initial_fields_2d",
    "random_initial_conditions_1d",
    "random_initial_modes_2d",
    "series_coefficients_2d",
    "solve_burgers1d",
    "solve_burgers2d",
]
