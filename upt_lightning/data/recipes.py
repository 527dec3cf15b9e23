"""The built-in data sets: their defaults and the functions that write them (used by generate.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch

from upt_lightning.data.solvers.spectral import cell_centres
from upt_lightning.data.solvers.trajectories import (
    burgers1d_trajectories,
    burgers2d_grid_trajectories,
    burgers2d_mesh_trajectories,
    ns2d_grid_trajectories,
)
from upt_lightning.data.writers import MeshWriter, PDEBench1DWriter, PDEBench2DWriter

# The root attribute ``generator`` of every file written here: tells our files from a user's.
GENERATOR = "upt_lightning.data.generate"
# Options that change nothing in the file, hence not in its name.
NOT_IN_FILENAME = ("batch_size",)
FIELD_NAMES_2D = ("u", "v")
# Options a writer stores under another attribute name: PDEBench 1D's viscosity attribute is "Nu".
_STORED_AS: Mapping[str, Mapping[str, str]] = MappingProxyType({"burgers1d": MappingProxyType({"nu": "Nu"})})

Advance = Callable[[int], None]


@dataclass(frozen=True)
class DatasetRecipe:
    """A built-in data set: defaults of its options and the function that writes it."""

    description: str
    equation: str
    default_num: int
    defaults: Mapping[str, int | float | None]
    write: Callable[[Path, int, int, dict, Advance, list[int] | None], None]
    grid_option: str | None  # option whose value names the written grid in the file name
    subsets: bool = True  # whether ``trajectories=`` can write some trajectories of the set


def _attrs(name: str, seed: int, num: int, options: dict) -> dict:
    """Root attributes: the data set, its equation, the seed, the trajectory count of the whole set and
    every option by its name, so the file can be regenerated and told apart from another request."""
    kept = {k: v for k, v in options.items() if k not in NOT_IN_FILENAME}
    return {"dataset": name, "equation": DATASETS[name].equation, "generator": GENERATOR,
            "seed": seed, "num": num, **kept}


def recorded_settings(attrs: Mapping) -> dict:
    """The settings a file of ours records (its root ``attrs``), by the names ``generate_dataset`` takes:
    ``dataset``, ``seed``, ``num`` and each option, as plain Python values.

    Files written before ``num`` was recorded give the whole set's count only when they hold some of its
    trajectories (``num_in_set``); an option a file does not record is left out.
    """
    name = _text(attrs["dataset"])
    options = DATASETS[name].defaults if name in DATASETS else {}
    stored_as = _STORED_AS.get(name, {})
    settings = {"dataset": name}
    for key in ("seed", "num", *options):
        stored = stored_as.get(key, key)
        if stored in attrs:
            settings[key] = _plain(attrs[stored])
    if "num" not in settings and "num_in_set" in attrs:
        settings["num"] = _plain(attrs["num_in_set"])
    return settings


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _plain(value):
    """A numpy scalar read from HDF5 as the Python number it was written from."""
    return value.item() if hasattr(value, "item") else value


def _times(o: dict) -> torch.Tensor:
    return o["dt_out"] * torch.arange(o["num_steps"], dtype=torch.float64)


def _subset_attrs(num: int, ids: list[int] | None) -> dict:
    """A file of some trajectories records which ones of the ``num``: ``trajectory_ids`` (sorted)."""
    return {} if ids is None else {"trajectory_ids": ids, "num_in_set": num}


def _write_burgers1d(path: Path, num: int, seed: int, o: dict, advance: Advance, ids: list[int] | None) -> None:
    attrs = {k: v for k, v in _attrs("burgers1d", seed, num, o).items() if k not in _STORED_AS["burgers1d"]}
    attrs.update(_subset_attrs(num, ids))
    x = cell_centres(o["resolution"])
    count = num if ids is None else len(ids)
    with PDEBench1DWriter(path, num=count, x=x, t=_times(o), nu=o["nu"], attrs=attrs) as writer:
        for u in burgers1d_trajectories(num, seed, select=ids, **o):
            writer.append(u[None])
            advance(1)


def _write_burgers2d(path: Path, num: int, seed: int, o: dict, advance: Advance, ids: list[int] | None) -> None:
    x = cell_centres(o["output_resolution"])
    attrs = {**_attrs("burgers2d", seed, num, o), **_subset_attrs(num, ids)}
    count = num if ids is None else len(ids)
    with PDEBench2DWriter(path, num=count, x=x, y=x, t=_times(o), field_names=FIELD_NAMES_2D, attrs=attrs) as writer:
        for fields in burgers2d_grid_trajectories(num, seed, select=ids, **o):
            writer.append(fields[None])
            advance(1)


def _write_burgers2d_mesh(path: Path, num: int, seed: int, o: dict, advance: Advance, ids: None) -> None:
    attrs, t = _attrs("burgers2d_mesh", seed, num, o), _times(o)
    with MeshWriter(path, num=num, field_names=FIELD_NAMES_2D, attrs=attrs) as writer:
        for coords, fields in burgers2d_mesh_trajectories(num, seed, **o):
            writer.append(coords, fields, t)
            advance(1)


def _write_ns2d(path: Path, num: int, seed: int, o: dict, advance: Advance, ids: list[int] | None) -> None:
    x = cell_centres(o["output_resolution"])
    attrs = {**_attrs("ns2d", seed, num, o), **_subset_attrs(num, ids)}
    count = num if ids is None else len(ids)
    with PDEBench2DWriter(path, num=count, x=x, y=x, t=_times(o), field_names=("w",), attrs=attrs) as writer:
        for fields in ns2d_grid_trajectories(num, seed, select=ids, **o):
            writer.append(fields[None])
            advance(1)


_GRID_2D = {"resolution": 64, "num_steps": 21, "dt_out": 0.05, "nu": 0.015, "amplitude": 0.5, "max_wavenumber": 3}
_EQUATION_2D = "u_t + u u_x + v u_y = nu (u_xx + u_yy), v_t + u v_x + v v_y = nu (v_xx + v_yy), periodic [0, 1)^2"
DATASETS: Mapping[str, DatasetRecipe] = MappingProxyType({
    "burgers1d": DatasetRecipe(
        description="PDEBench's 1D viscous Burgers set-up and layout",
        equation="u_t + (u^2/2)_x = (nu/pi) u_xx, periodic (0, 1)",
        default_num=256,
        defaults=MappingProxyType({"resolution": 1024, "num_steps": 201, "dt_out": 0.01, "nu": 0.01,
                                   "num_modes": 2, "max_wavenumber": 4, "cfl": 0.5, "batch_size": 64}),
        write=_write_burgers1d,
        grid_option="resolution",
    ),
    "burgers2d": DatasetRecipe(
        description="2D viscous Burgers (u, v) on a grid, PDEBench per-sample groups",
        equation=_EQUATION_2D,
        default_num=256,
        defaults=MappingProxyType({**_GRID_2D, "output_resolution": None, "cfl": 0.5, "batch_size": 32}),
        write=_write_burgers2d,
        grid_option="output_resolution",
    ),
    "burgers2d_mesh": DatasetRecipe(
        description="2D viscous Burgers (u, v) at scattered points, a different set per trajectory",
        equation=_EQUATION_2D,
        default_num=256,
        defaults=MappingProxyType({**_GRID_2D, "min_points": 2000, "max_points": 4000, "cfl": 0.5,
                                   "batch_size": 32}),
        write=_write_burgers2d_mesh,
        grid_option=None,
        subsets=False,  # its point sets are drawn trajectory after trajectory
    ),
    "ns2d": DatasetRecipe(
        description="2D incompressible Navier-Stokes, vorticity w, the FNO paper's forcing, PDEBench per-sample groups",
        equation="w_t + u . grad w = nu lap w + 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y)), -lap psi = w, "
                 "u = (psi_y, -psi_x), periodic [0, 1)^2",
        default_num=128,
        # 32 steps per unit time keep the Courant number below 1 on 64x64 as the forcing speeds the flow up.
        defaults=MappingProxyType({"resolution": 64, "output_resolution": None, "num_steps": 21, "dt_out": 1.0,
                                   "nu": 1e-3, "max_wavenumber": 8, "substeps": 32, "batch_size": 32}),
        write=_write_ns2d,
        grid_option="output_resolution",
    ),
})
