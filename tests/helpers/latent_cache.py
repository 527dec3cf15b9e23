"""A tiny grid data file, a stage-1 checkpoint fitted on it and stage-2 modules, for the latent-cache tests."""

from __future__ import annotations

import math
import warnings

import h5py
import lightning.pytorch as pl
import numpy as np
import torch

from upt_lightning.data.datamodules import GridDataModule
from upt_lightning.modules import AutoencoderModule, OperatorModule

GRID = (8, 8)
STEPS = 6
TINY = dict(encoder={"kind": "grid", "patch_size": 2, "dim": 16, "depth": 1, "num_heads": 2},
            decoder={"dim": 16, "depth": 1, "num_heads": 2, "num_frequencies": 3},
            latent_tokens=4, latent_dim=8)


def write_groups_file(path, trajectories: int = 4) -> None:
    """PDEBench per-sample groups: '0000'/data (T, X, Y, 2) of waves moving one cell per step."""
    x = (np.arange(GRID[0]) + 0.5) / GRID[0]
    y = (np.arange(GRID[1]) + 0.5) / GRID[1]
    t = np.arange(STEPS) * 0.1
    with h5py.File(path, "w") as file:
        file.attrs["field_names"] = np.array(["u", "v"], dtype="S")
        for n in range(trajectories):
            phase = 2 * math.pi * n / trajectories
            shift = t[:, None, None] * 10 / GRID[0]
            u = np.sin(2 * math.pi * (x[None, :, None] - shift) + phase) + 0 * y[None, None, :]
            v = np.cos(2 * math.pi * (y[None, None, :] + shift) + phase) + 0.5 + 0 * x[None, :, None]
            group = file.create_group(f"{n:04d}")
            group["data"] = np.stack([u, v], axis=-1).astype(np.float32)
            group["grid/x"], group["grid/y"], group["grid/t"] = x, y, t


def fit_autoencoder(data_path, ckpt_path):
    """A stage-1 checkpoint from a real two-step fit, with the data's normalisation statistics."""
    datamodule = GridDataModule(str(data_path), batch_size=4, split=(0.5, 0.25, 0.25), rollout_horizon=2)
    model = AutoencoderModule(field_channels={"u": 1, "v": 1}, coord_dim=2, grid_shape=GRID,
                              sampling={"num_queries": 32}, **TINY)
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(ckpt_path)
    return ckpt_path


def operator_module(ckpt, loss=None, **kwargs) -> OperatorModule:
    """A stage-2 module on ``ckpt``; ``loss`` overrides some of the loss settings (strong inverse terms)."""
    torch.manual_seed(0)
    loss = {"lambda_inv_enc": 0.5, "lambda_inv_dec": 0.5, "inverse_loss_max_weight": 0.5, **(loss or {})}
    args = dict(operator={"dim": 16, "depth": 1, "num_heads": 2}, sampling={"num_queries": 24}, loss=loss)
    return OperatorModule(autoencoder_ckpt=str(ckpt), **{**args, **kwargs})
