"""Data: built-in PDE solvers -> HDF5 files (PDEBench layouts and our mesh layout) -> datasets.

``upt_lightning.data.solvers`` holds the pseudo-spectral solvers, ``writers`` the atomic HDF5
writers, and ``python -m upt_lightning.data.generate NAME --out DIR`` generates a built-in data set
(see docs/data.md).
"""

from upt_lightning.data.collate import collate_mesh_windows, collate_windows
from upt_lightning.data.datamodules import GridDataModule, MeshDataModule, TrajectoryDataModule
from upt_lightning.data.datasets import TrajectoryWindows
from upt_lightning.data.multi import MultiDataModule
from upt_lightning.data.readers import (
    MeshSource,
    PDEBench1DSource,
    PDEBenchCFDSource,
    PDEBenchGroupsSource,
    SharedMeshSource,
    TrajectorySource,
    detect_layout,
    open_source,
)
from upt_lightning.data.split_stats import compute_stats, split_trajectories
from upt_lightning.data.scan import validate_source
from upt_lightning.errors import DataError, DataFileNotFoundError

__all__ = [
    "DataError",
    "DataFileNotFoundError",
    "GridDataModule",
    "MeshDataModule",
    "MeshSource",
    "MultiDataModule",
    "PDEBench1DSource",
    "PDEBenchCFDSource",
    "PDEBenchGroupsSource",
    "SharedMeshSource",
    "TrajectoryDataModule",
    "TrajectorySource",
    "TrajectoryWindows",
    "collate_mesh_windows",
    "collate_windows",
    "compute_stats",
    "detect_layout",
    "open_source",
    "split_trajectories",
    "validate_source",
]
