"""The interface shared by all readers: lazy, per-process HDF5 access to trajectories.

A *trajectory* is a sequence of ``T`` frames of ``C`` field channels at ``N`` points with
coordinates ``(N, d)``. Readers keep only metadata (shapes, names) in memory and read the slices
asked for, so memory does not grow with the file size. The HDF5 handle is opened on first use in
each process: a DataLoader worker (forked or spawned) opens its own handle instead of sharing
its parent's, which HDF5 does not support. Coordinates and times, the same for every window of a
trajectory, are read and checked once per process and kept in a byte-bounded LRU store.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from upt_lightning.data.readers.cache import TensorLRU
from upt_lightning.data.readers.checks import check_finite, check_numeric, open_hdf5
from upt_lightning.errors import DataError, DataFileNotFoundError


class TrajectorySource:
    """Base class of the readers; subclasses implement the ``_read_*`` methods and ``_inspect``.

    Subclasses set in ``_inspect``: ``_field_spec`` {name: channels}, ``_steps`` (T per
    trajectory), ``_points`` (N per trajectory), ``grid_shape`` (tuple, or None for meshes) and
    ``coord_dim``. Readers whose coordinates and times are the same for every trajectory set
    ``shared_grid = True``, so one copy is kept for all. ``metadata_cache_bytes`` bounds the
    coordinates and times kept per process. A reader of another file format overrides
    ``_check_format`` and ``_open`` (HDF5 by default; ``shared_mesh.py`` also opens ``.npz``).
    """

    layout: str = ""
    shared_grid: bool = False
    metadata_cache_bytes: int = 64 * 2**20

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataFileNotFoundError(f"data file {self.path} does not exist; check the path")
        self._check_format()
        self._handle: h5py.File | None = None
        self._pid: int | None = None
        self._field_spec: dict[str, int] = {}
        self._steps: list[int] = []
        self._points: list[int] = []
        self.grid_shape: tuple[int, ...] | None = None
        self.coord_dim = 0
        self._cache = TensorLRU(self.metadata_cache_bytes)
        self._datasets: dict[str, h5py.Dataset] = {}
        self._inspect(self._file())
        if not self._steps:
            raise DataError(f"{self.path} holds 0 trajectories; a data file needs at least one")
        if self.num_channels == 0:
            raise DataError(f"{self.path}: the data has 0 field channels; it needs at least one")
        if min(self._points) == 0:
            raise DataError(f"{self.path}: trajectory {self._points.index(0)} has 0 points")
        if min(self._steps) == 0:
            raise DataError(f"{self.path}: trajectory {self._steps.index(0)} has 0 time steps")

    def _check_format(self) -> None:
        """Raise :class:`DataError` unless the file is of a format this reader opens (HDF5 here)."""
        if not h5py.is_hdf5(self.path):
            raise DataError(
                f"{self.path} is not an HDF5 file; give a PDEBench, upt_mesh or shared_mesh .h5 file "
                "(or a shared_mesh .npz)"
            )

    def _open(self) -> h5py.File:
        """A new read-only handle of the file, for this process (HDF5 here)."""
        return open_hdf5(self.path)

    def _inspect(self, file: h5py.File) -> None:
        raise NotImplementedError

    def _read_frames(self, file: h5py.File, traj: int, t_indices: list[int]) -> np.ndarray:
        """Frames ``t_indices`` (sorted, unique) of ``traj`` as an array ``(len, N, C)``."""
        raise NotImplementedError

    def _read_coords(self, file: h5py.File, traj: int) -> np.ndarray:
        """Point coordinates of ``traj``, ``(N, d)``."""
        raise NotImplementedError

    def _read_times(self, file: h5py.File, traj: int) -> np.ndarray:
        """Times of the frames of ``traj``, ``(T,)``."""
        raise NotImplementedError

    def _file(self) -> h5py.File:
        # A handle inherited through fork belongs to the parent; HDF5 handles must not be shared.
        if self._handle is None or self._pid != os.getpid():
            self._handle = self._open()
            self._pid = os.getpid()
            self._datasets = {}
        return self._handle

    def _dataset(self, name: str) -> h5py.Dataset:
        """``self._file()[name]``, looked up once per handle: a lookup by name costs several
        times the read of a small frame. At most 1024 are kept (then they are looked up anew)."""
        file = self._file()
        if name not in self._datasets:
            if len(self._datasets) >= 1024:
                self._datasets.clear()
            self._datasets[name] = file[name]
        return self._datasets[name]

    def close(self) -> None:
        """Close this process's handle and forget the cached metadata; the next read reopens."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None
        self._pid = None
        self._datasets = {}
        self._cache.clear()

    def __enter__(self) -> TrajectorySource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_pid"] = None
        state["_datasets"] = {}
        state["_cache"] = TensorLRU(self._cache.max_bytes)  # a spawned worker fills its own
        return state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, trajectories={self.num_trajectories}, "
            f"fields={self._field_spec}, grid_shape={self.grid_shape})"
        )

    @property
    def num_trajectories(self) -> int:
        return len(self._steps)

    @property
    def field_spec(self) -> dict[str, int]:
        """Ordered ``{field_name: channels}``; the channel axis of frames follows this order."""
        return dict(self._field_spec)

    @property
    def field_names(self) -> list[str]:
        return list(self._field_spec)

    @property
    def num_channels(self) -> int:
        return sum(self._field_spec.values())

    def num_steps(self, traj: int) -> int:
        """Number of frames ``T`` of trajectory ``traj``."""
        return self._steps[self._check_traj(traj)]

    def num_points(self, traj: int) -> int:
        """Number of points ``N`` of trajectory ``traj``."""
        return self._points[self._check_traj(traj)]

    def times(self, traj: int) -> torch.Tensor:
        """Times of the frames of ``traj`` as read from the file, float64 ``(T,)``."""
        return self.cached_times(traj).clone()

    def coords(self, traj: int) -> torch.Tensor:
        """Point coordinates of ``traj``, float32 ``(N, d)``."""
        return self.cached_coords(traj).clone()

    def cached_times(self, traj: int) -> torch.Tensor:
        """:meth:`times` without the copy: a tensor shared by later calls, never modify it."""
        traj = self._check_traj(traj)
        return self._cache.get(("times", 0 if self.shared_grid else traj), lambda: self._load_times(traj))

    def cached_coords(self, traj: int) -> torch.Tensor:
        """:meth:`coords` without the copy: a tensor shared by later calls, never modify it."""
        traj = self._check_traj(traj)
        return self._cache.get(("coords", 0 if self.shared_grid else traj), lambda: self._load_coords(traj))

    def _load_times(self, traj: int) -> torch.Tensor:
        raw = np.asarray(self._read_times(self._file(), traj))
        check_numeric(raw, f"{self.path}: times of trajectory {traj}")
        values = torch.from_numpy(raw.astype(np.float64, copy=False))
        check_finite(values, f"{self.path}: times of trajectory {traj}")
        return values

    def _load_coords(self, traj: int) -> torch.Tensor:
        raw = np.asarray(self._read_coords(self._file(), traj))
        check_numeric(raw, f"{self.path}: coordinates of trajectory {traj}")
        values = torch.from_numpy(raw.astype(np.float32, copy=False))
        check_finite(values, f"{self.path}: coordinates of trajectory {traj}")
        return values

    def frames(self, traj: int, t_indices: Sequence[int]) -> torch.Tensor:
        """Frames ``t_indices`` (any order, repeats allowed) of ``traj``: float32 (len, N, C)."""
        traj = self._check_traj(traj)
        requested = np.asarray(list(t_indices), dtype=np.int64)
        steps = self._steps[traj]
        if requested.size == 0 or requested.min() < 0 or requested.max() >= steps:
            raise IndexError(
                f"frame indices {requested.tolist()} out of range for trajectory {traj} "
                f"with {steps} time steps (valid: 0..{steps - 1})"
            )
        # h5py reads only increasing, unique index lists; reorder after the read. A window's
        # indices already increase: no np.unique and no reordering copy then.
        increasing = bool((requested[1:] > requested[:-1]).all())
        unique, inverse = (requested, None) if increasing else np.unique(requested, return_inverse=True)
        values = np.asarray(self._read_frames(self._file(), traj, unique.tolist()))
        check_numeric(values, f"{self.path}: trajectory {traj}, frames {requested.tolist()}")
        values = values.astype(np.float32, copy=False)
        if inverse is not None:
            values = values[inverse]
        # numpy's check costs a tenth of torch's on an item-sized array; check_finite words the error.
        if not np.isfinite(values).all():
            where = f"{self.path}: trajectory {traj}, frames {requested.tolist()}"
            check_finite(torch.from_numpy(values), where)
        return torch.from_numpy(values)

    def _check_traj(self, traj: int) -> int:
        traj = int(traj)
        if not 0 <= traj < self.num_trajectories:
            raise IndexError(
                f"trajectory {traj} out of range: {self.path} has "
                f"{self.num_trajectories} trajectories"
            )
        return traj
