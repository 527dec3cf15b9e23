"""Reader for a fixed mesh: the same scattered points for every trajectory, in HDF5 or ``.npz``."""

from __future__ import annotations

import h5py
import numpy as np

from upt_lightning.data.readers.base import TrajectorySource
from upt_lightning.data.readers.checks import field_names_attr, open_hdf5, time_selection
from upt_lightning.data.readers.npz import NpzArrays, is_npz
from upt_lightning.errors import DataError

KEYS = {"coords": ("(P, d)", 2), "data": ("(N, T, P, C)", 4), "t": ("(T,)", 1)}  # key: (axes, rank)
LAYOUT_HELP = "a shared_mesh file holds coords (P, d), data (N, T, P, C) and t (T,)"


class SharedMeshSource(TrajectorySource):
    """``shared_mesh`` file: root datasets ``coords`` (P, d), ``data`` (N, T, P, C), ``t`` (T,).

    All N trajectories share the P points and the T times (``t`` increasing). Field names come from
    the root attribute ``field_names`` (C strings, one channel each), else ``c0, c1, ...``. The same
    keys in a NumPy ``.npz`` archive (``field_names`` as a member) are read too. ``grid_shape`` is
    None: a :class:`~upt_lightning.data.MeshDataModule` reads it like an ``upt_mesh`` file.

    Reads are lazy: HDF5 reads ``data[n, t_indices]`` per request; an ``.npz`` written by
    ``np.savez`` is memory-mapped (only the frames asked for are read), one written by
    ``np.savez_compressed`` is decompressed whole once per process (see ``npz.py``). The keys,
    shapes, dtypes, times and coordinates are checked when the file is opened.
    """

    layout = "shared_mesh"
    shared_grid = True  # one set of points and times for all trajectories

    def _check_format(self) -> None:
        if not (h5py.is_hdf5(self.path) or is_npz(self.path)):
            raise DataError(
                f"{self.path} is not an HDF5 file nor a NumPy .npz archive; write the shared_mesh "
                f"layout ({LAYOUT_HELP}) with h5py or np.savez"
            )

    def _open(self) -> h5py.File | NpzArrays:
        return open_hdf5(self.path) if h5py.is_hdf5(self.path) else NpzArrays(self.path)

    def _inspect(self, file: h5py.File | NpzArrays) -> None:
        missing = [key for key in KEYS if key not in file]
        if missing:
            raise DataError(
                f"{self.path} lacks {missing} required by the 'shared_mesh' layout (found keys "
                f"{sorted(file.keys())}); {LAYOUT_HELP}: add {', '.join(repr(k) for k in missing)}"
            )
        for key, (axes, rank) in KEYS.items():
            self._check_array(file[key], key, axes, rank)
        coords, data, times = file["coords"], file["data"], file["t"]
        trajectories, steps, points, channels = data.shape
        if points != coords.shape[0]:
            raise DataError(
                f"{self.path}: 'data' {data.shape} holds {points} points but 'coords' {coords.shape} "
                f"has {coords.shape[0]}; data (N, T, P, C) and coords (P, d) must agree on P: write one "
                "row of coords per point of data"
            )
        if coords.shape[1] == 0:
            raise DataError(f"{self.path}: 'coords' {coords.shape} has no coordinate axis; it must be (P, d), d >= 1")
        if times.shape[0] != steps:
            raise DataError(
                f"{self.path}: 't' has {times.shape[0]} entries but 'data' {data.shape} has {steps} time "
                "steps; data (N, T, P, C) and t (T,) must agree on T: write one time per frame"
            )
        self._check_times(np.asarray(times[:], dtype=np.float64))
        self._check_coords(np.asarray(coords[:]))
        self._field_spec = {name: 1 for name in field_names_attr(file, channels, self.path)}
        self._steps = [steps] * trajectories
        self._points = [points] * trajectories
        self.grid_shape = None
        self.coord_dim = coords.shape[1]

    def _check_array(self, array, key: str, axes: str, rank: int) -> None:
        """Raise unless ``array`` (the file's ``key``) is an array of real numbers with the rank of ``axes``."""
        if getattr(array, "ndim", None) is None or getattr(array, "dtype", None) is None:
            raise DataError(f"{self.path}: {key!r} is not an array ({type(array).__name__}); store it as a {axes} dataset")
        if array.ndim != rank:
            raise DataError(
                f"{self.path}: {key!r} has rank {array.ndim} (shape {array.shape}), expected rank {rank}: "
                f"{key} {axes}; {LAYOUT_HELP}"
            )
        if array.dtype.kind not in "fiu":
            raise DataError(
                f"{self.path}: {key!r} has dtype {array.dtype}, not real numbers; store it as float32/float64"
            )

    def _check_times(self, times: np.ndarray) -> None:
        if not np.isfinite(times).all():
            raise DataError(f"{self.path}: 't' holds NaN or Inf ({times[:5].tolist()} ...); write finite frame times")
        if times.size > 1 and not (np.diff(times) > 0).all():
            where = int(np.flatnonzero(np.diff(times) <= 0)[0]) + 1
            raise DataError(
                f"{self.path}: 't' does not increase strictly (index {where}: "
                f"{times[max(0, where - 2):where + 2].tolist()}); t must list the frames' times in order"
            )

    def _check_coords(self, coords: np.ndarray) -> None:
        bad = ~np.isfinite(coords)
        if bad.any():
            first = int(np.flatnonzero(bad.any(axis=1))[0])
            raise DataError(
                f"{self.path}: 'coords' holds {int(bad.sum())} NaN or Inf value(s) (first at point {first}: "
                f"{coords[first].tolist()}); every point needs finite coordinates: fix or drop those points"
            )

    def _read_frames(self, file, traj: int, t_indices: list[int]) -> np.ndarray:
        """Frames ``t_indices`` of trajectory ``traj``, ``(len, P, C)``."""
        values = self._dataset("data")[traj, time_selection(t_indices)]
        # A slice of a memory-mapped .npz is a read-only view of the file: copy, so tensors own their memory.
        return np.asarray(values) if values.flags.writeable else np.array(values)

    def _read_coords(self, file, traj: int) -> np.ndarray:
        """The shared points, ``(P, d)``."""
        return np.array(file["coords"][:])

    def _read_times(self, file, traj: int) -> np.ndarray:
        """The shared times, ``(T,)``."""
        return np.array(file["t"][:])
