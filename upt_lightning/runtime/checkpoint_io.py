"""Atomic file writes for checkpoints: a killed save never leaves a truncated file under the final name.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file lies in
the system temp directory; when that is another file system (a tmpfs ``/tmp``, a cluster's local
disk) the commit is a copy into the final path, so a kill during it leaves a truncated
``last.ckpt``. Here the bytes go to a hidden temporary file next to the target, are flushed to
disk, and replace the target with ``os.replace`` (atomic on POSIX and Windows): the final name
holds either the old complete file or the new complete one.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

TEMP_SUFFIX = ".tmp"


def temp_path_for(path: Path) -> Path:
    """The hidden temporary file a write of ``path`` uses (per process, so writers never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk; not possible on Windows.
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yield the temporary file to fill for ``path``; on success it replaces ``path`` atomically and
    the rename is made durable, on any error (or kill of the block) it is removed and ``path`` untouched.
    The block must flush and fsync what it wrote."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(path)
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview,
                       midway: Callable[[Path], None] | None = None) -> None:
    """Write ``data`` to ``path`` atomically; ``midway`` is called after half the bytes (fault tests)."""
    path = Path(path)
    with _replacing(path) as temp, open(temp, "wb") as file:
        half = len(data) // 2
        file.write(data[:half])
        if midway is not None:
            file.flush()
            midway(path)
        file.write(data[half:])
        file.flush()
        os.fsync(file.fileno())


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy ``source`` to ``target`` so that ``target`` never exists half-written."""
    with _replacing(Path(target)) as temp:
        shutil.copyfile(source, temp)
        with open(temp, "rb+") as file:
            os.fsync(file.fileno())


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete temporary files that killed writes left in ``directory``; returns them.

    Only hidden ``.<name>.<pid>.tmp`` files of this module are touched, never a checkpoint.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.glob(f".*{TEMP_SUFFIX}") if p.is_file() and p.name.count(".") >= 3]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (see the module docstring).

    Args:
        midway: called with the target path halfway through writing each checkpoint; only
            fault-injection tests set it.
    """

    def __init__(self, midway: Callable[[Path], None] | None = None) -> None:
        super().__init__()
        self.midway = midway

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's own transaction
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local paths")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getbuffer(), midway=self.midway)
