"""Errors for bad data files and the checks the readers apply to what they read.

The full-file scan (``validate_source``) lives above the readers, in :mod:`upt_lightning.data.scan`,
so that this module, which the readers import, imports none of them. Every problem found in a data
file is a :class:`DataError` (a ``ValueError``) whose message names the file, what is wrong and how
to fix it, so that a bad file fails before training starts.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import torch


class DataError(ValueError):
    """A data file, or a request for its contents, does not fit what the library can read."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """The data file does not exist; caught by ``except DataError`` and ``FileNotFoundError``."""


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
