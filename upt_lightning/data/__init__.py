"""Data: built-in PDE solvers -> HDF5 files (PDEBench layouts and our mesh layout) -> datasets.

``upt_lightning.data.solvers`` holds the pseudo-spectral solvers, ``writers`` the atomic HDF5
writers, and ``python -m upt_lightning.data.generate NAME --out DIR`` generates a built-in data set
(see docs/data.md).
"""
