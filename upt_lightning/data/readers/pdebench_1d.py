"""Reader for PDEBench's 1D layout: one ``tensor`` holding all trajectories on a shared grid."""

from __future__ import annotations

import h5py
import numpy as np

from upt_lightning.data.readers.base import TrajectorySource
from upt_lightning.data.readers.checks import (
    check_time_length,
    field_names_attr,
    read_axis,
    require_keys,
    require_length,
    require_rank,
    time_selection,
)


class PDEBench1DSource(TrajectorySource):
    """PDEBench 1D: ``tensor`` (N, T, X) or (N, T, X, C), ``x-coordinate`` (X,), ``t-coordinate``.

    PDEBench stores ``T + 1`` entries in ``t-coordinate`` for ``T`` saved steps (for example 202
    times for 201 frames of 1D Burgers); the saved frames are the first ``T`` times, so the
    first ``T`` entries are used. The field is ``"u"`` with ``C`` channels unless the root
    attribute ``field_names`` names one field per channel.
    """

    layout = "pdebench_1d"
    shared_grid = True  # one coordinate and time axis for all trajectories
    required_keys = ("tensor", "x-coordinate", "t-coordinate")

    def _inspect(self, file: h5py.File) -> None:
        require_keys(file, self.required_keys, self.path, self.layout)
        tensor = file["tensor"]
        require_rank(
            tensor,
            (3, 4),
            self.path,
            "(trajectories, time, x) or (trajectories, time, x, channels)",
        )
        trajectories, steps, points = tensor.shape[:3]
        channels = tensor.shape[3] if tensor.ndim == 4 else 1
        require_length(file["x-coordinate"], points, self.path, "x")
        check_time_length(file["t-coordinate"], steps, self.path)
        if "field_names" in file.attrs:
            self._field_spec = {name: 1 for name in field_names_attr(file, channels, self.path)}
        else:
            self._field_spec = {"u": channels}
        self._steps = [steps] * trajectories
        self._points = [points] * trajectories
        self.grid_shape = (points,)
        self.coord_dim = 1

    def _read_frames(self, file: h5py.File, traj: int, t_indices: list[int]) -> np.ndarray:
        values = self._dataset("tensor")[traj, time_selection(t_indices)]
        return values.reshape(len(t_indices), self._points[traj], self.num_channels)

    def _read_coords(self, file: h5py.File, traj: int) -> np.ndarray:
        return read_axis(file["x-coordinate"], self.path).reshape(-1, 1)

    def _read_times(self, file: h5py.File, traj: int) -> np.ndarray:
        return file["t-coordinate"][: self._steps[traj]]
