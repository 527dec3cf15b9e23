"""Test-set evaluation: one-step and rollout metrics, persistence baseline, zero-shot super-resolution."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from omegaconf import DictConfig, OmegaConf

from upt_lightning.metrics import RolloutErrorMetrics
from upt_lightning.modules import OperatorModule
from upt_lightning.modules.evaluation import synced_compute, without_padding

log = logging.getLogger("upt_lightning.pipeline")


def keep_fit_logs(trainer: pl.Trainer) -> None:
    """Under ddp_spawn give trainer.test its own CSV log directory (``<log dir>/test``).

    Each spawned call starts fresh processes, whose new CSVLogger writer deletes the metrics.csv it finds:
    the fit's losses and validation metrics. On one process the writer lives on and appends instead.
    """
    if not isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        return
    trainer.loggers = [
        CSVLogger(save_dir=logger.log_dir, name="", version="test") if isinstance(logger, CSVLogger) else logger
        for logger in trainer.loggers
    ]


def test_metrics(trainer: pl.Trainer, model: OperatorModule, datamodule) -> dict[str, float]:
    """Run trainer.test; returns the merged {name: value} of both test loaders."""
    keep_fit_logs(trainer)
    results = trainer.test(model, datamodule=datamodule, verbose=False)
    merged: dict[str, float] = {}
    for loader_results in results:
        for key, value in loader_results.items():
            merged[key.split("/dataloader_idx_")[0]] = float(value)
    return merged


def _first_batch_to(loader, device):
    batch = next(iter(loader))
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def example_rollout(model: OperatorModule, datamodule) -> dict[str, torch.Tensor]:
    """First test rollout window: {"truth": (K, N, C), "pred": (K, N, C), "input": (N, C)}, raw values."""
    model.eval()
    batch = _first_batch_to(datamodule.test_dataloader()[1], model.device)
    horizon = batch["targets"].shape[1]
    mask = batch.get("mask")
    pred = model.rollout(batch["fields"][:1], batch["coords"][:1], horizon, dt=batch["dt"][:1],
                         mask=None if mask is None else mask[:1])
    valid = batch["mask"][0] if "mask" in batch else slice(None)
    return {"truth": batch["targets"][0][:, valid].cpu(), "pred": pred[0][:, valid].cpu(),
            "input": batch["fields"][0][valid].cpu(), "coords": batch["coords"][0][valid].cpu()}


@torch.no_grad()
def superres_metrics(cfg: DictConfig, model: OperatorModule, datamodule) -> dict[str, float | str]:
    """Encode the coarse test trajectories, decode on the finer grid, compare with the fine solution."""
    spec = cfg.data.get("superres")
    if not spec or not cfg.evaluate.superres or datamodule.grid_shape is None:
        return {}
    from upt_lightning.data.datamodules import GridDataModule

    coarse = datamodule.grid_shape[0]
    options = {**OmegaConf.to_container(cfg.data.generate_options or {}, resolve=True),
               "resolution": coarse, "output_resolution": int(spec.factor) * coarse}
    fine = GridDataModule(
        path=spec.path, generate=cfg.data.generate, generate_options=options, batch_size=cfg.data.batch_size,
        rollout_horizon=cfg.data.rollout_horizon, frame_stride=cfg.data.frame_stride, split=list(cfg.data.split),
        split_seed=cfg.data.split_seed,
    )
    fine.prepare_data()
    fine.setup("test")
    model.eval()
    horizon = cfg.data.rollout_horizon
    metric = RolloutErrorMetrics(horizon, datamodule.num_channels, fine.grid_shape,
                                 channel_names=fine.field_names).to(model.device)
    for coarse_batch, fine_batch in zip(datamodule.test_dataloader()[1], fine.test_dataloader()[1]):
        # Under torchrun each process reads its shard; drop the shards' padding (data/even_shards.py).
        coarse_batch, fine_batch = without_padding(coarse_batch), without_padding(fine_batch)
        if coarse_batch is None:
            continue
        if not torch.equal(coarse_batch["traj"], fine_batch["traj"]):
            raise RuntimeError("coarse and fine test sets hold different trajectories; regenerate the fine copy")
        coarse = {k: v.to(model.device) for k, v in coarse_batch.items() if isinstance(v, torch.Tensor)}
        fine_targets = fine_batch["targets"].to(model.device)
        pred = model.rollout(coarse["fields"], coarse["coords"], horizon, dt=coarse["dt"],
                             query_points=fine_batch["coords"].to(model.device))
        metric.update(pred, fine_targets)
    values = synced_compute(metric)
    log.info("zero-shot super-resolution %s -> %s evaluated", datamodule.grid_shape, fine.grid_shape)
    out = {f"superres/rollout_nrmse_h{k + 1}": float(v) for k, v in enumerate(values["nrmse"])}
    out["superres/grid"] = "x".join(str(s) for s in fine.grid_shape)
    return out


def write_config(cfg: DictConfig, run_dir: Path) -> None:
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
