"""File primitives, structure checks and small helpers shared by the readers.

Each check raises :class:`DataError` naming the file, the dataset and what was expected, so a
malformed file fails when it is opened rather than deep inside a training run. The full-file scan
(``validate_source``) lives above the readers, in :mod:`upt_lightning.data.scan`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from upt_lightning.errors import DataError


def require_keys(group: h5py.Group, names: Sequence[str], path: Path, layout: str) -> None:
    """Raise when any of ``names`` is missing from ``group``, listing the missing and found keys."""
    missing = [name for name in names if name not in group]
    if missing:
        where = "root" if group.name == "/" else f"group {group.name!r}"
        raise DataError(
            f"{path}: {where} lacks {missing} required by the {layout!r} layout; "
            f"found keys {sorted(group.keys())}"
        )


def require_rank(dataset: h5py.Dataset, ranks: Sequence[int], path: Path, meaning: str) -> None:
    """Raise when ``dataset.ndim`` is not one of ``ranks``; ``meaning`` spells out the axes."""
    if dataset.ndim not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise DataError(
            f"{path}: dataset {dataset.name!r} has rank {dataset.ndim} (shape {dataset.shape}), "
            f"expected rank {expected}: {meaning}"
        )


def require_length(dataset: h5py.Dataset, length: int, path: Path, axis_name: str) -> None:
    """Raise when a coordinate dataset is not 1D with ``length`` entries."""
    if dataset.ndim != 1 or dataset.shape[0] != length:
        raise DataError(
            f"{path}: coordinate {dataset.name!r} has shape {dataset.shape} but the data has "
            f"{length} points along {axis_name}; the coordinate must be 1D with {length} entries"
        )


def check_time_length(dataset: h5py.Dataset, steps: int, path: Path) -> None:
    """Accept ``steps`` or ``steps + 1`` time entries (PDEBench stores one extra, see readers)."""
    if dataset.ndim != 1 or dataset.shape[0] not in (steps, steps + 1):
        raise DataError(
            f"{path}: time coordinate {dataset.name!r} has shape {dataset.shape} but the data has "
            f"{steps} time steps; expected {steps} (or {steps + 1}, PDEBench's convention) entries"
        )


def field_names_attr(file: h5py.File, channels: int, path: Path) -> list[str]:
    """Names from the root attribute ``field_names`` (one per channel), else ``c0, c1, ...``."""
    if "field_names" not in file.attrs:
        return [f"c{i}" for i in range(channels)]
    raw = np.atleast_1d(file.attrs["field_names"])
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    if len(names) != channels or len(set(names)) != len(names):
        raise DataError(
            f"{path}: attribute field_names={names} must give {channels} distinct names, one per "
            f"channel of the data"
        )
    return names


def read_axis(dataset: h5py.Dataset, path: Path) -> np.ndarray:
    """The values of a grid axis coordinate ``dataset``, checked to be ordered: strictly increasing or
    strictly decreasing.

    A constant axis puts every point of a line at one place and an unordered one scrambles which
    points are neighbours, yet both would train without an error: the encoders' patches, the decoder's
    locality and super-resolution all take a grid axis to be ordered. Values that are not finite real
    numbers are left to ``check_numeric`` and ``check_finite``, which word that problem.
    """
    values = dataset[:]
    if values.dtype.kind not in "fiu" or len(values) < 2 or not np.isfinite(values).all():
        return values
    steps = np.diff(values.astype(np.float64))
    if not steps.any():
        raise DataError(
            f"{path}: grid coordinate {dataset.name!r} is constant ({values[0].item()} at all {len(values)} "
            "points); each axis needs the distinct positions of its grid points: fix the coordinate in the file"
        )
    if not ((steps > 0).all() or (steps < 0).all()):
        direction = np.sign(steps[np.flatnonzero(steps)[0]])  # that of the first move
        where = int(np.flatnonzero(np.sign(steps) != direction)[0]) + 1  # the first point not following it
        raise DataError(
            f"{path}: grid coordinate {dataset.name!r} is not ordered (it turns back or repeats at index "
            f"{where}: {values[max(0, where - 2):where + 2].tolist()}); grid axes must increase (or decrease) "
            "strictly, as the data are laid out along them: fix the coordinate in the file"
        )
    return values


def grid_coords(axes: Sequence[np.ndarray]) -> np.ndarray:
    """Row-major grid points ``(prod(len(a)), d)``: point ``i * Y + j`` is ``(x[i], y[j])``."""
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=-1)


def trajectory_groups(file: h5py.File) -> list[str]:
    """Names of the per-trajectory groups ("0000", "0001", ...) in numeric order."""
    names = [k for k in file.keys() if k.isdigit() and isinstance(file[k], h5py.Group)]
    return sorted(names, key=int)


def time_selection(t_indices: list[int]) -> slice | list[int]:
    """An h5py selection for sorted unique indices: a strided slice when evenly spaced.

    h5py reads a slice as one hyperslab, much faster than a point list.
    """
    if len(t_indices) == 1:
        return slice(t_indices[0], t_indices[0] + 1)
    step = t_indices[1] - t_indices[0]
    if all(b - a == step for a, b in zip(t_indices, t_indices[1:])):
        return slice(t_indices[0], t_indices[-1] + 1, step)
    return t_indices


def open_hdf5(path: str | os.PathLike) -> h5py.File:
    """Open ``path`` read-only; a truncated or corrupt file is a :class:`DataError`, not an h5py ``OSError``."""
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DataError(
            f"{path} cannot be opened as HDF5 ({error}); the file is truncated or corrupt (an interrupted "
            "download or copy?): download or generate it again"
        ) from None


def check_numeric(values: np.ndarray, what: str) -> None:
    """Raise :class:`DataError` unless ``values`` holds real numbers (not strings, objects, complex, bool)."""
    if values.dtype.kind not in "fiu":
        raise DataError(
            f"{what} has dtype {values.dtype}, not real numbers; store fields, coordinates and times as "
            "float32/float64 (or integer) datasets"
        )


def check_finite(values: torch.Tensor, what: str) -> None:
    """Raise :class:`DataError` naming ``what`` when ``values`` holds NaN or Inf."""
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise DataError(
            f"{what} contains {bad} NaN or Inf value(s) of {values.numel()}; "
            "repair or drop this trajectory (validate_source(source) lists the first bad one)"
        )
