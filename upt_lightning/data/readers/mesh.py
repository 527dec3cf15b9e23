"""Reader for this library's mesh layout: scattered points, a different count per trajectory."""

from __future__ import annotations

import h5py
import numpy as np

from upt_lightning.data.readers.base import TrajectorySource
from upt_lightning.data.readers.checks import (
    field_names_attr,
    require_keys,
    require_length,
    require_rank,
    time_selection,
    trajectory_groups,
)
from upt_lightning.errors import DataError


class MeshSource(TrajectorySource):
    """``upt_mesh`` file: root attributes ``layout="upt_mesh"`` and ``field_names``; per group.

    Group ``"0000"``, ``"0001"``, ... holds ``coords`` (P_i, d), ``data`` (T, P_i, C) and ``t``
    (T,). The point count ``P_i`` may differ between trajectories; ``d`` and ``C`` may not.
    Each name in ``field_names`` is one channel. ``grid_shape`` is None.
    """

    layout = "upt_mesh"

    def _inspect(self, file: h5py.File) -> None:
        self._groups = trajectory_groups(file)
        if not self._groups:
            raise DataError(
                f"{self.path} holds 0 trajectory groups ('0000', '0001', ...); found keys "
                f"{sorted(file.keys())}"
            )
        channels = None
        for name in self._groups:
            group = file[name]
            require_keys(group, ("coords", "data", "t"), self.path, self.layout)
            coords, data = group["coords"], group["data"]
            require_rank(coords, (2,), self.path, "(points, coordinate dimension)")
            require_rank(data, (3,), self.path, "(time, points, channels)")
            if data.shape[1] != coords.shape[0]:
                raise DataError(
                    f"{self.path}: group {name!r} has coords for {coords.shape[0]} points but data "
                    f"for {data.shape[1]}; coords (P, d) and data (T, P, C) must agree on P"
                )
            require_length(group["t"], data.shape[0], self.path, "time")
            if channels is None:
                channels, self.coord_dim = data.shape[2], coords.shape[1]
            elif (data.shape[2], coords.shape[1]) != (channels, self.coord_dim):
                raise DataError(
                    f"{self.path}: group {name!r} has {data.shape[2]} channels and "
                    f"{coords.shape[1]}-D coords, group {self._groups[0]!r} has {channels} and "
                    f"{self.coord_dim}-D; all trajectories need the same channels and coordinate "
                    "dimension"
                )
            self._steps.append(data.shape[0])
            self._points.append(data.shape[1])
        self._field_spec = {name: 1 for name in field_names_attr(file, channels, self.path)}
        self.grid_shape = None

    def _read_frames(self, file: h5py.File, traj: int, t_indices: list[int]) -> np.ndarray:
        return self._dataset(f"{self._groups[traj]}/data")[time_selection(t_indices)]

    def _read_coords(self, file: h5py.File, traj: int) -> np.ndarray:
        return file[self._groups[traj]]["coords"][:]

    def _read_times(self, file: h5py.File, traj: int) -> np.ndarray:
        return file[self._groups[traj]]["t"][:]
