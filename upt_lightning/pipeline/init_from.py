"""``init_from``: start stage 1 and stage 2 of a run from a trained model's weights (models/init_from.py decides
which tensors), and ``init_from_freeze_epochs``: train only the stems and heads for the first epochs."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from omegaconf import DictConfig

from upt_lightning.callbacks import FreezeTrunk
from upt_lightning.runtime.checkpoints import checkpoint_kind
from upt_lightning.models.init_from import AUTOENCODER_PARTS, check_init_checkpoint


def init_from_path(cfg: DictConfig) -> Path | None:
    value = cfg.get("init_from")
    return Path(str(value)) if value else None


def freeze_epochs(cfg: DictConfig) -> int:
    return int(cfg.get("init_from_freeze_epochs") or 0)


def init_from_identity(cfg: DictConfig) -> dict | None:
    """What stage 1's cache key adds for ``init_from``: the checkpoint's path, size and mtime, and the freezing;
    None without init_from (so the keys of other runs stay as they were)."""
    path = init_from_path(cfg)
    if path is None:
        return None
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "freeze_epochs": freeze_epochs(cfg)}


def freeze_callbacks(cfg: DictConfig, stage: str) -> list[pl.Callback]:
    """The FreezeTrunk callback of ``stage`` when ``init_from_freeze_epochs`` > 0: stage 1 freezes the encoder's
    and decoder's trunks, stage 2 the operator's blocks (only when the checkpoint has an operator)."""
    epochs, path = freeze_epochs(cfg), init_from_path(cfg)
    if not epochs or path is None:
        return []
    if stage == "stage1":
        return [FreezeTrunk(epochs, AUTOENCODER_PARTS)]
    if checkpoint_kind(check_init_checkpoint(path)) != "operator":
        return []
    return [FreezeTrunk(epochs, ("operator",))]
