"""Reader for PDEBench's compressible-flow (CFD) layout: one root dataset per field."""

from __future__ import annotations

import h5py
import numpy as np

from upt_lightning.data.readers.base import TrajectorySource
from upt_lightning.data.readers.checks import (
    check_time_length,
    grid_coords,
    read_axis,
    require_keys,
    require_length,
    require_rank,
    time_selection,
)
from upt_lightning.errors import DataError

AXES = ("x", "y", "z")
VELOCITIES = ("Vx", "Vy", "Vz")


class PDEBenchCFDSource(TrajectorySource):
    """PDEBench CFD file: ``density``, ``pressure``, ``Vx``, ``Vy``, each (N, T, X, Y).

    Coordinates come from ``x-coordinate`` (X,) and ``y-coordinate`` (Y,), times from
    ``t-coordinate`` (T,) or (T + 1,) (PDEBench's extra entry; the first ``T`` are used). Fields
    are density, pressure, Vx, Vy with one channel each, in that order. The same layout in 1D
    (``density`` (N, T, X), velocity ``Vx``) and 3D (adds ``z-coordinate`` and ``Vz``) is read too.
    """

    layout = "pdebench_cfd"
    shared_grid = True  # one coordinate and time axis for all trajectories

    def _inspect(self, file: h5py.File) -> None:
        require_keys(file, ("density",), self.path, self.layout)
        density = file["density"]
        require_rank(density, (3, 4, 5), self.path, "(trajectories, time, x[, y[, z]])")
        dim = density.ndim - 2
        self._fields = ("density", "pressure", *VELOCITIES[:dim])
        self._axes = tuple(f"{a}-coordinate" for a in AXES[:dim])
        require_keys(file, (*self._fields, *self._axes, "t-coordinate"), self.path, self.layout)
        for name in self._fields:
            if file[name].shape != density.shape:
                raise DataError(
                    f"{self.path}: dataset {name!r} has shape {file[name].shape} but 'density' has "
                    f"{density.shape}; all CFD fields must share one shape"
                )
        trajectories, steps, *spatial = density.shape
        for axis_name, coordinate, length in zip(AXES, self._axes, spatial):
            require_length(file[coordinate], length, self.path, axis_name)
        check_time_length(file["t-coordinate"], steps, self.path)
        self._field_spec = {name: 1 for name in self._fields}
        self._steps = [steps] * trajectories
        self._points = [int(np.prod(spatial))] * trajectories
        self.grid_shape = tuple(spatial)
        self.coord_dim = dim

    def _read_frames(self, file: h5py.File, traj: int, t_indices: list[int]) -> np.ndarray:
        selection = time_selection(t_indices)
        values = np.stack([self._dataset(name)[traj, selection] for name in self._fields], axis=-1)
        return values.reshape(len(t_indices), self._points[traj], len(self._fields))

    def _read_coords(self, file: h5py.File, traj: int) -> np.ndarray:
        return grid_coords([read_axis(file[name], self.path) for name in self._axes])

    def _read_times(self, file: h5py.File, traj: int) -> np.ndarray:
        return file["t-coordinate"][: self._steps[traj]]
