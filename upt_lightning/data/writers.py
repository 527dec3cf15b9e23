"""HDF5 writers for the PDEBench layouts and our mesh layout (documented in docs/data.md).

Every writer is a context manager that writes into a temporary file beside the target and moves
it into place with ``os.replace`` only when all announced trajectories were written, so an
interrupted or failed generation never leaves a half-written file under the final name.
Trajectories are appended in order, in batches; everything is stored as float32.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


def _float32(name: str, values: ArrayLike, ndim: int) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or Inf; refusing to write non-finite values")
    return array.astype(np.float32)


def _same_shape(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if shape != expected:
        raise ValueError(f"{name} has shape {shape}, expected {expected}")


class _AtomicWriter:
    """Opens ``path``'s temporary sibling on enter; renames it to ``path`` on a clean exit."""

    def __init__(self, path: str | os.PathLike, num: int, attrs: Mapping[str, Any] | None) -> None:
        if num < 1:
            raise ValueError(f"num (trajectories to write) must be >= 1, got {num}")
        self.path = Path(path)
        self.num = int(num)
        self.written = 0
        self._attrs = dict(attrs or {})
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.file: h5py.File | None = None

    def __enter__(self):
        self.file = h5py.File(self._tmp, "w")
        try:
            self.file.attrs.update(self._attrs)
            self._create()
        except BaseException:
            self.file.close()
            self._tmp.unlink(missing_ok=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.file.close()
        if exc_type is None and self.written == self.num:
            os.replace(self._tmp, self.path)
            return
        self._tmp.unlink(missing_ok=True)
        if exc_type is None:
            raise ValueError(f"only {self.written} of {self.num} trajectories were written to {self.path}")

    def _create(self) -> None:
        """Datasets and attributes that do not depend on the trajectories."""

    def _reserve(self, count: int) -> int:
        if self.file is None:
            raise RuntimeError("use the writer in a `with` block")
        if self.written + count > self.num:
            raise ValueError(f"writing {count} more trajectories would exceed the announced {self.num}")
        start, self.written = self.written, self.written + count
        return start


class PDEBench1DWriter(_AtomicWriter):
    """PDEBench 1D: ``tensor`` (N, T, X), ``x-coordinate`` (X,), ``t-coordinate`` (T,), attr ``Nu``."""

    def __init__(self, path, *, num: int, x: ArrayLike, t: ArrayLike, nu: float, attrs=None) -> None:
        super().__init__(path, num, {**(attrs or {}), "Nu": float(nu)})
        self.x, self.t = _float32("x", x, 1), _float32("t", t, 1)

    def _create(self) -> None:
        self.file["x-coordinate"] = self.x
        self.file["t-coordinate"] = self.t
        self.file.create_dataset("tensor", (self.num, len(self.t), len(self.x)), dtype=np.float32)

    def append(self, u: ArrayLike) -> None:
        """Append trajectories ``u`` ``(B, T, X)``."""
        u = _float32("u", u, 3)
        _same_shape("u", u.shape[1:], (len(self.t), len(self.x)))
        start = self._reserve(len(u))
        self.file["tensor"][start : start + len(u)] = u


class PDEBench2DWriter(_AtomicWriter):
    """PDEBench 2D per-sample groups ``"0000"``...: ``data`` (T, X, Y, C), ``grid/x``, ``grid/y``, ``grid/t``.

    ``data[t, i, j]`` is at ``(x[i], y[j])``. Root attribute ``field_names`` names the C channels.
    """

    def __init__(
        self, path, *, num: int, x: ArrayLike, y: ArrayLike, t: ArrayLike,
        field_names: Sequence[str], attrs=None,
    ) -> None:
        super().__init__(path, num, {**(attrs or {}), "field_names": list(field_names)})
        self.x, self.y, self.t = _float32("x", x, 1), _float32("y", y, 1), _float32("t", t, 1)
        self.channels = len(field_names)

    def append(self, data: ArrayLike) -> None:
        """Append trajectories ``data`` ``(B, T, X, Y, C)``."""
        data = _float32("data", data, 5)
        _same_shape("data", data.shape[1:], (len(self.t), len(self.x), len(self.y), self.channels))
        start = self._reserve(len(data))
        for offset, sample in enumerate(data):
            group = self.file.create_group(f"{start + offset:04d}")
            group["data"] = sample
            group["grid/x"] = self.x
            group["grid/y"] = self.y
            group["grid/t"] = self.t


class MeshWriter(_AtomicWriter):
    """Our mesh layout: root attrs ``layout="upt_mesh"``, ``field_names``; per trajectory a group
    ``"0000"``... with ``coords`` (P_i, d), ``data`` (T, P_i, C) and ``t`` (T,), all float32."""

    def __init__(self, path, *, num: int, field_names: Sequence[str], attrs=None) -> None:
        super().__init__(path, num, {**(attrs or {}), "layout": "upt_mesh", "field_names": list(field_names)})
        self.channels = len(field_names)

    def append(self, coords: ArrayLike, data: ArrayLike, t: ArrayLike) -> None:
        """Append one trajectory: ``coords`` (P, d), ``data`` (T, P, C), ``t`` (T,)."""
        coords, data, t = _float32("coords", coords, 2), _float32("data", data, 3), _float32("t", t, 1)
        if len(coords) == 0:
            raise ValueError("coords is empty: a mesh trajectory needs at least one point")
        _same_shape("data", data.shape, (len(t), len(coords), self.channels))
        group = self.file.create_group(f"{self._reserve(1):04d}")
        group["coords"] = coords
        group["data"] = data
        group["t"] = t
