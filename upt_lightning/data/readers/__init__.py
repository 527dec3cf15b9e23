"""Readers of trajectory files: PDEBench layouts and this library's mesh layout.

``open_source(path)`` detects the layout from the file's keys and returns a
:class:`TrajectorySource`; all readers share its interface (see ``base.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from upt_lightning.data.readers.base import TrajectorySource
from upt_lightning.data.readers.checks import trajectory_groups
from upt_lightning.data.readers.mesh import MeshSource
from upt_lightning.data.readers.pdebench_1d import PDEBench1DSource
from upt_lightning.data.readers.pdebench_cfd import PDEBenchCFDSource
from upt_lightning.data.readers.pdebench_groups import PDEBenchGroupsSource
from upt_lightning.data.readers.checks import open_hdf5
from upt_lightning.errors import DataError, DataFileNotFoundError

READERS: dict[str, type[TrajectorySource]] = {
    cls.layout: cls
    for cls in (PDEBench1DSource, PDEBenchGroupsSource, PDEBenchCFDSource, MeshSource)
}

LAYOUT_KEYS = {
    "pdebench_1d": "root datasets 'tensor', 'x-coordinate', 't-coordinate'",
    "pdebench_groups": "groups '0000', ... with 'data' and 'grid/x', 'grid/y', 'grid/t'",
    "pdebench_cfd": (
        "root datasets 'density', 'pressure', 'Vx', 'Vy', '<x|y>-coordinate', 't-coordinate'"
    ),
    "upt_mesh": "root attribute layout='upt_mesh'; groups '0000', ... with 'coords', 'data', 't'",
}


def detect_layout(path: str | os.PathLike) -> str:
    """Name of the layout of the HDF5 file at ``path``, judged from its keys and attributes."""
    path = Path(path)
    if not path.exists():
        raise DataFileNotFoundError(f"data file {path} does not exist; check the path")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path} is not an HDF5 file; give a PDEBench or upt_mesh .h5 file")
    with open_hdf5(path) as file:
        layout_attr = file.attrs.get("layout")
        if isinstance(layout_attr, bytes):
            layout_attr = layout_attr.decode()
        if layout_attr == "upt_mesh":
            return "upt_mesh"
        if "tensor" in file:
            return "pdebench_1d"
        if "density" in file:
            return "pdebench_cfd"
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
    "TrajectorySource",
    "detect_layout",
    "open_source",
]
