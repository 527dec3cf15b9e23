"""Fitting anchored decoding (modules/anchor.py) after stage 2 and storing it in the best checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning.pytorch as pl
from omegaconf import DictConfig

from upt_lightning.modules import OperatorModule
from upt_lightning.modules.anchor import calibrate_anchor
from upt_lightning.runtime.checkpoint_io import AtomicCheckpointIO
from upt_lightning.runtime.checkpoints import read_checkpoint

log = logging.getLogger("upt_lightning.pipeline")


def anchor_enabled(cfg: DictConfig, model) -> bool:
    """``stage2.anchor`` (default false) for a single-dataset OperatorModule."""
    return bool(cfg.stage2.get("anchor", False)) and isinstance(model, OperatorModule) and model.dataset_specs is None


def fit_anchor(trainer: pl.Trainer, model: OperatorModule, datamodule, best: Path | None) -> dict:
    """Fit ``model.anchor_weights`` on the validation windows and write them into ``best`` (rank 0 only).

    Every rank fits on the whole validation split (the loaders here are not sharded), so all ranks agree.
    Returns the calibration report (weights, windows per step, validation one-step nRMSE before and after).
    """
    start = time.time()
    model.to(trainer.strategy.root_device)
    report = calibrate_anchor(model, datamodule.val_dataloader())
    report["seconds"] = round(time.time() - start, 1)
    weights = ", ".join(f"{w:.2f}" for w in report["weights"])
    if "nrmse_h1" in report:
        before, after = report["nrmse_h1"]
        log.info("anchored decoding: weights [%s] fitted on the validation windows in %.1f s; validation one-step "
                 "nRMSE %.5f without, %.5f with", weights, report["seconds"], before, after)
    if best is not None and trainer.is_global_zero:
        checkpoint = read_checkpoint(best, "best stage-2 checkpoint")
        checkpoint["anchor_weights"] = list(report["weights"])
        AtomicCheckpointIO().save_checkpoint(checkpoint, best)
    return report
