"""Reader for PDEBench's per-sample group layout (2D reaction-diffusion, shallow water, ...)."""

from __future__ import annotations

import h5py
import numpy as np

from upt_lightning.data.readers.base import TrajectorySource
from upt_lightning.data.readers.checks import (
    field_names_attr,
    grid_coords,
    require_keys,
    require_length,
    require_rank,
    time_selection,
    trajectory_groups,
)
from upt_lightning.data.validation import DataError

AXES = ("x", "y", "z")


class PDEBenchGroupsSource(TrajectorySource):
    """PDEBench file with one group per trajectory: ``"0000"/data`` (T, X, Y, C), ``grid/{x,y,t}``.

    Each group holds its own grid (``grid/x`` (X,), ``grid/y`` (Y,)) and times ``grid/t`` (T,);
    all groups must share the spatial shape and channel count, ``T`` may differ. Field names come
    from the root attribute ``field_names`` (one per channel), else ``"c0", "c1", ...``. Data of
    rank 3 (T, X, C) or 5 (T, X, Y, Z, C) is read as 1D or 3D with ``grid/x`` / ``grid/z``.
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
        require_keys(group, ("data", "grid"), self.path, self.layout)
        data = group["data"]
        require_rank(data, (3, 4, 5), self.path, "(time, x[, y[, z]], channels)")
        axes = AXES[: data.ndim - 2]
        require_keys(group["grid"], (*axes, "t"), self.path, self.layout)
        for axis, length in zip(axes, data.shape[1:-1]):
            require_length(group["grid"][axis], length, self.path, axis)
        require_length(group["grid"]["t"], data.shape[0], self.path, "time")
        return data.shape

    def _read_frames(self, file: h5py.File, traj: int, t_indices: list[int]) -> np.ndarray:
        values = self._dataset(f"{self._groups[traj]}/data")[time_selection(t_indices)]
        return values.reshape(len(t_indices), self._points[traj], self.num_channels)

    def _read_coords(self, file: h5py.File, traj: int) -> np.ndarray:
        grid = file[self._groups[traj]]["grid"]
        return grid_coords([grid[axis][:] for axis in AXES[: self.coord_dim]])

    def _read_times(self, file: h5py.File, traj: int) -> np.ndarray:
        return file[self._groups[traj]]["grid"]["t"][:]
