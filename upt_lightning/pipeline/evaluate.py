"""Test-set evaluation: one-step and rollout metrics, persistence baseline, an example rollout.

Zero-shot super-resolution: superres.py."""

from __future__ import annotations

import logging
import weakref
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from omegaconf import DictConfig, OmegaConf

from upt_lightning.modules.surrogate import SurrogateModule

log = logging.getLogger("upt_lightning.pipeline")


_FIT_LOGGERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # trainer -> the loggers of its fit


def keep_fit_logs(trainer: pl.Trainer, split: str = "test") -> None:
    """Under ddp_spawn give trainer.validate/test its own CSV log directory (``<fit log dir>/<split>``).

    Each spawned call starts fresh processes, whose new CSVLogger writer deletes the metrics.csv it finds:
    the fit's losses and validation metrics. On one process the writer lives on and appends instead.
    """
    if not isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        return
    fit_loggers = _FIT_LOGGERS.setdefault(trainer, list(trainer.loggers))
    trainer.loggers = [
        CSVLogger(save_dir=logger.log_dir, name="", version=split) if isinstance(logger, CSVLogger) else logger
        for logger in fit_loggers
    ]


def split_metrics(trainer: pl.Trainer, model: SurrogateModule, datamodule, split: str) -> dict[str, float]:
    """Evaluate ``model`` on the validation (``split="val"``) or test split with trainer.validate/test;
    returns the merged {name: value} of both loaders (one-step and rollout), e.g. ``val/rollout_nrmse_h10``."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    keep_fit_logs(trainer, split)
    run = trainer.validate if split == "val" else trainer.test
    results = run(model, datamodule=datamodule, verbose=False)
    merged: dict[str, float] = {}
    for loader_results in results:
        for key, value in loader_results.items():
            merged[key.split("/dataloader_idx_")[0]] = float(value)
    return merged


def test_metrics(trainer: pl.Trainer, model: SurrogateModule, datamodule) -> dict[str, float]:
    """Run trainer.test; returns the merged {name: value} of both test loaders."""
    return split_metrics(trainer, model, datamodule, "test")


def _first_batch_to(loader, device):
    batch = next(iter(loader))
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def example_rollout(model: SurrogateModule, datamodule, dataset: str | None = None) -> dict[str, torch.Tensor]:
    """First test rollout window: {"truth": (K, N, C), "pred": (K, N, C), "input": (N, C)}, raw values.

    ``dataset``: for a multi-dataset model, the name of ``datamodule``'s dataset; ``datamodule`` is then that
    dataset's own DataModule."""
    model.eval()
    batch = _first_batch_to(datamodule.test_dataloader()[1], model.device)
    horizon = batch["targets"].shape[1]
    mask = batch.get("mask")
    pred = model.rollout(batch["fields"][:1], batch["coords"][:1], horizon, dt=batch["dt"][:1],
                         mask=None if mask is None else mask[:1], **({} if dataset is None else {"dataset": dataset}))
    valid = batch["mask"][0] if "mask" in batch else slice(None)
    return {"truth": batch["targets"][0][:, valid].cpu(), "pred": pred[0][:, valid].cpu(),
            "input": batch["fields"][0][valid].cpu(), "coords": batch["coords"][0][valid].cpu()}


def write_config(cfg: DictConfig, run_dir: Path) -> None:
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
