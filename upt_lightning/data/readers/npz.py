"""Read-only, lazy access to the arrays of a NumPy ``.npz`` archive, for the ``shared_mesh`` reader.

``np.load(path, mmap_mode="r")`` does not memory-map the members of an ``.npz`` (numpy maps only
``.npy`` files; an ``NpzFile`` reads a member whole, again on every access). An ``.npz`` is a zip
archive of ``.npy`` files, and ``np.savez`` stores them uncompressed, so such a member's bytes lie
in the archive as they would in a ``.npy`` file: :class:`NpzArrays` maps them with ``np.memmap``
and a read touches only the slice asked for. Members of ``np.savez_compressed`` cannot be mapped:
they are decompressed whole on first use and kept, in each process that reads them.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from upt_lightning.errors import DataError

_LOCAL_HEADER = b"PK\x03\x04"
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def is_npz(path: str | os.PathLike) -> bool:
    """Whether ``path`` should be read as an ``.npz``: its suffix says so, or it is a zip archive."""
    path = Path(path)
    return path.suffix.lower() == ".npz" or zipfile.is_zipfile(path)


class NpzArrays:
    """The members of the ``.npz`` at ``path`` by name (``"data"`` for ``data.npy``), read-only.

    Quacks like the root of an ``h5py.File`` as far as the readers' checks use it: ``name`` is
    ``"/"``, ``keys()``, ``in``, ``[name]`` (a ``np.memmap`` for an uncompressed member, else an
    array loaded once), and ``attrs`` holds the member ``field_names`` when there is one (an HDF5
    file keeps it as a root attribute). Open one per process, as the readers do with HDF5 handles.
    """

    name = "/"

    def __init__(self, path: str | os.PathLike, attr_names: tuple[str, ...] = ("field_names",)) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as error:
            raise DataError(
                f"{self.path} cannot be opened as a NumPy .npz archive ({error}); the file is truncated, "
                "corrupt or not an .npz: write it again with np.savez, or give an HDF5 file"
            ) from None
        self._members = {
            info.filename[: -len(".npy")]: info for info in self._zip.infolist() if info.filename.endswith(".npy")
        }
        self._arrays: dict[str, np.ndarray] = {}
        self.attrs = {name: self[name] for name in attr_names if name in self}

    def keys(self) -> list[str]:
        return sorted(self._members)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            if name not in self._members:
                raise KeyError(f"{self.path} has no member {name!r}; found {self.keys()}")
            info = self._members[name]
            array = self._map(info) if info.compress_type == zipfile.ZIP_STORED else None
            self._arrays[name] = array if array is not None else self._load(name, info)
        return self._arrays[name]

    def close(self) -> None:
        self._zip.close()
        self._arrays = {}  # the maps close when their last view is gone

    def _map(self, info: zipfile.ZipInfo) -> np.ndarray | None:
        """The stored member as a read-only ``np.memmap``; None when it cannot be mapped (then it is loaded)."""
        with open(self.path, "rb") as file:
            file.seek(info.header_offset)
            local = file.read(30)
            if len(local) < 30 or local[:4] != _LOCAL_HEADER:
                return None
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            file.seek(info.header_offset + 30 + name_length + extra_length)
            try:
                version = np.lib.format.read_magic(file)
                if version not in _HEADER_READERS:
                    return None
                shape, fortran_order, dtype = _HEADER_READERS[version](file)
            except ValueError:
                return None
            offset = file.tell()
        if dtype.hasobject or 0 in shape or not shape:
            return None
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape,
                         order="F" if fortran_order else "C")

    def _load(self, name: str, info: zipfile.ZipInfo) -> np.ndarray:
        try:
            with self._zip.open(info) as member:
                return np.lib.format.read_array(member, allow_pickle=False)
        except ValueError as error:
            raise DataError(
                f"{self.path}: member {name!r} cannot be read without pickle ({error}); store it as an array "
                "of numbers or strings, e.g. field_names=np.array(['u', 'v'])"
            ) from None
