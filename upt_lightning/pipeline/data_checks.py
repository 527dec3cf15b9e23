"""A full scan of the data file before training, once per file version.

The DataModule's ``setup`` checks the file's structure and reads the training statistics, but a NaN
in a validation frame, a time coordinate that goes backwards in a test trajectory or a corrupt
chunk would otherwise surface in the middle of training. ``validate_source`` reads everything once
(chunk by chunk, so any file size fits); a stamp in ``cache_dir`` remembers a clean file by its
path, size and modification time, so later runs skip the scan.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from omegaconf import DictConfig

from upt_lightning.runtime.checkpoint_io import atomic_write_bytes
from upt_lightning.data.scan import validate_source
from upt_lightning.errors import DataError

log = logging.getLogger("upt_lightning.pipeline")


def _stamp(cfg: DictConfig, path: Path) -> Path:
    stat = path.stat()
    identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return Path(cfg.cache_dir) / "validated" / f"{hashlib.sha256(identity.encode()).hexdigest()[:16]}.ok"


def validate_data_once(cfg: DictConfig, datamodule) -> None:
    """Scan every value of the DataModule's file unless ``validate_data=false`` or it passed before."""
    if not cfg.get("validate_data", True):
        return
    path = Path(datamodule.path)
    stamp = _stamp(cfg, path)
    if stamp.is_file():
        return
    log.info("checking every value of %s once (set validate_data=false to skip)", path)
    source = datamodule.source
    try:
        validate_source(source)
    except OSError as error:  # h5py's error for an unreadable chunk
        raise DataError(f"{path} cannot be read ({error}); the file is corrupt: download or generate it again") from None
    finally:
        source.close()  # DataLoader workers open their own handles
    atomic_write_bytes(stamp, f"{path}\n".encode())
