"""Readers of trajectory files: PDEBench layouts, this library's mesh layout and a fixed mesh.

``open_source(path)`` detects the layout from the file's keys and returns a
:class:`TrajectorySource`; all readers share its interface (see ``base.py``). HDF5 files are
told apart by their keys; a NumPy ``.npz`` archive is read as ``shared_mesh``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from upt_lightning.data.readers.base import TrajectorySource
from upt_lightning.data.readers.checks import trajectory_groups
from upt_lightning.data.readers.mesh import MeshSource
from upt_lightning.data.readers.npz import is_npz
from upt_lightning.data.readers.pdebench_1d import PDEBench1DSource
from upt_lightning.data.readers.pdebench_cfd import PDEBenchCFDSource
from upt_lightning.data.readers.pdebench_groups import PDEBenchGroupsSource
from upt_lightning.data.readers.shared_mesh import SharedMeshSource
from upt_lightning.data.readers.checks import open_hdf5
from upt_lightning.errors import DataError, DataFileNotFoundError

READERS: dict[str, type[TrajectorySource]] = {
    cls.layout: cls
    for cls in (PDEBench1DSource, PDEBenchGroupsSource, PDEBenchCFDSource, MeshSource, SharedMeshSource)
}

LAYOUT_KEYS = {
    "pdebench_1d": "root datasets 'tensor', 'x-coordinate', 't-coordinate'",
    "pdebench_groups": "groups '0000', ... with 'data' and 'grid/x', 'grid/y', 'grid/t'",
    "pdebench_cfd": (
        "root datasets 'density', 'pressure', 'Vx', 'Vy', '<x|y>-coordinate', 't-coordinate'"
    ),
    "upt_mesh": "root attribute layout='upt_mesh'; groups '0000', ... with 'coords', 'data', 't'",
    "shared_mesh": (
        "root datasets 'coords' (P, d), 'data' (N, T, P, C), 't' (T,), optional attribute 'field_names' "
        "(the same keys in an .npz)"
    ),
}


def detect_layout(path: str | os.PathLike) -> str:
    """Name of the layout of the file at ``path``: an HDF5 file's from its keys and attributes, and
    ``shared_mesh`` for a NumPy ``.npz`` (by its suffix, or any zip archive), whose keys its reader checks."""
    path = Path(path)
    if not path.exists():
        raise DataFileNotFoundError(f"data file {path} does not exist; check the path")
    if not h5py.is_hdf5(path):
        if is_npz(path):
            return "shared_mesh"
        raise DataError(
            f"{path} is not an HDF5 file; give a PDEBench, upt_mesh or shared_mesh .h5 file (or a shared_mesh .npz)"
        )
    with open_hdf5(path) as file:
        layout_attr = file.attrs.get("layout")
        if isinstance(layout_attr, bytes):
            layout_attr = layout_attr.decode()
        if layout_attr in ("upt_mesh", "shared_mesh"):
            return layout_attr
        if "tensor" in file:
            return "pdebench_1d"
        if "density" in file:
            return "pdebench_cfd"
        # Root 'coords' or 'data' arrays belong to no other layout: its reader names any missing key.
        if any(isinstance(file.get(key), h5py.Dataset) for key in ("coords", "data")):
            return "shared_mesh"
        groups = trajectory_groups(file)
        if groups and "coords" in file[groups[0]]:
            return "upt_mesh"
        if groups and "data" in file[groups[0]]:
            return "pdebench_groups"
        found = sorted(file.keys())
        attributes = sorted(file.attrs.keys())
    supported = "; ".join(f"{name}: {keys}" for name, keys in LAYOUT_KEYS.items())
    raise DataError(
        f"{path} has an unknown structure (root keys {found}, root attributes {attributes}); "
        f"supported layouts are {supported}"
    )


def open_source(path: str | os.PathLike, layout: str = "auto") -> TrajectorySource:
    """Open the trajectory file at ``path`` with the reader of ``layout`` ("auto" detects it)."""
    if layout == "auto":
        layout = detect_layout(path)
    if layout not in READERS:
        raise ValueError(f"unknown layout {layout!r}; choose 'auto' or one of {sorted(READERS)}")
    return READERS[layout](path)


__all__ = [
    "READERS",
    "MeshSource",
    "PDEBench1DSource",
    "PDEBenchCFDSource",
    "PDEBenchGroupsSource",
    "SharedMeshSource",
    "TrajectorySource",
    "detect_layout",
    "open_source",
]
