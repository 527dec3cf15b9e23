"""Reader for PDEBench's per-sample group layout (2D reaction-diffusion, shallow water, ...)."""

from __future__ import annotations

import h5py
import numpy as np

from upt_lightning.data.readers.base import TrajectorySource
from upt_lightning.data.readers.checks import (
    field_names_attr,
    grid_coords,
    read_axis,
    require_keys,
    require_length,
    require_rank,
    time_selection,
    trajectory_groups,
)
from upt_lightning.errors import DataError

AXES = ("x", "y", "z")


class PDEBenchGroupsSource(TrajectorySource):
    """PDEBench file with one group per trajectory: ``"0000"/data`` (T, X, Y, C), ``grid/{x,y,t}``.

    Each group holds its own grid (``grid/x`` (X,), ``grid/y`` (Y,)) and times ``grid/t`` (T,);
    all groups must share the spatial shape and channel count, ``T`` may differ. Field names come
    from the root attribute ``field_names`` (one per channel), else ``"c0", "c1", ...``.

    The number of spatial axes is that of the grid datasets (``grid/x``; ``grid/x, y``; ``grid/x, y, z``),
    not the rank of ``data``: data of one more axis than that (time first) has no channel axis and is
    read as one channel, so a 2D file (T, X, Y) is not mistaken for a 1D grid of X points with Y channels.
    """

    layout = "pdebench_groups"

    def _inspect(self, file: h5py.File) -> None:
        self._groups = trajectory_groups(file)
        if not self._groups:
            raise DataError(
                f"{self.path} holds 0 trajectory groups ('0000', '0001', ...); found keys "
                f"{sorted(file.keys())}"
            )
        first = self._check_group(file[self._groups[0]])
        self.coord_dim = len(first) - 2
        self.grid_shape = tuple(first[1:-1])
        channels = first[-1]
        for name in self._groups:
            shape = self._check_group(file[name])
            if tuple(shape[1:]) != tuple(first[1:]):
                raise DataError(
                    f"{self.path}: group {name!r} has data of shape {shape}, group "
                    f"{self._groups[0]!r} has {first}; all groups need the same grid and channels"
                )
            self._steps.append(shape[0])
            self._points.append(int(np.prod(self.grid_shape)))
        self._field_spec = {name: 1 for name in field_names_attr(file, channels, self.path)}

    def _check_group(self, group: h5py.Group) -> tuple[int, ...]:
        """(T, *grid, C) of a group's data; C = 1 when the data has no channel axis."""
        require_keys(group, ("data", "grid"), self.path, self.layout)
        data = group["data"]
        require_rank(data, (2, 3, 4, 5), self.path, "(time, x[, y[, z]][, channels])")
        grid = group["grid"]
        spatial = next((n for n in (3, 2, 1) if all(axis in grid for axis in AXES[:n])), 1)
        axes = AXES[:spatial]
        require_keys(grid, (*axes, "t"), self.path, self.layout)
        if data.ndim not in (spatial + 1, spatial + 2):
            raise DataError(
                f"{self.path}: {group.name}/data has shape {data.shape}, but the group's grid names "
                f"{spatial} spatial axes ({', '.join('grid/' + a for a in axes)}): expected (time, "
                f"{', '.join(axes)}, channels) or, for one field, (time, {', '.join(axes)})"
            )
        for axis, length in zip(axes, data.shape[1 : 1 + spatial]):
            require_length(grid[axis], length, self.path, axis)
        require_length(grid["t"], data.shape[0], self.path, "time")
        return tuple(data.shape) if data.ndim == spatial + 2 else (*data.shape, 1)

    def _read_frames(self, file: h5py.File, traj: int, t_indices: list[int]) -> np.ndarray:
        values = self._dataset(f"{self._groups[traj]}/data")[time_selection(t_indices)]
        return values.reshape(len(t_indices), self._points[traj], self.num_channels)

    def _read_coords(self, file: h5py.File, traj: int) -> np.ndarray:
        grid = file[self._groups[traj]]["grid"]
        return grid_coords([read_axis(grid[axis], self.path) for axis in AXES[: self.coord_dim]])

    def _read_times(self, file: h5py.File, traj: int) -> np.ndarray:
        return file[self._groups[traj]]["grid"]["t"][:]
