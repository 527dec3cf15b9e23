"""Small good and broken data files and real checkpoints for the bad-input table of train.py."""

from __future__ import annotations

import builtins
from pathlib import Path

import h5py
import lightning.pytorch as pl
import numpy as np
import torch

from helpers.entry import TINY_COMMON, compose_train

TRAJECTORIES, STEPS, POINTS = 6, 8, 32


def grid_file(path: Path, mutate=None, points: int = POINTS, channels: int = 1) -> Path:
    """PDEBench 1D layout: tensor (N, T, X[, C]), x-coordinate (X,), t-coordinate (T + 1,); ``mutate`` edits it."""
    rng = np.random.default_rng(0)
    shape = (TRAJECTORIES, STEPS, points) + ((channels,) if channels > 1 else ())
    data = {"tensor": rng.standard_normal(shape).astype(np.float32),
            "x-coordinate": (np.arange(points) + 0.5) / points, "t-coordinate": np.arange(STEPS + 1) * 0.1}
    if mutate is not None:
        mutate(data)
    with h5py.File(path, "w") as file:
        for key, value in data.items():
            file[key] = value
        if channels > 1:
            file.attrs["field_names"] = [f"c{i}" for i in range(channels)]
    return path


def mesh_file(path: Path, points: int) -> Path:
    """upt_mesh layout with ``points`` scattered points per trajectory."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as file:
        file.attrs["layout"], file.attrs["field_names"] = "upt_mesh", ["u"]
        for n in range(TRAJECTORIES):
            file[f"{n:04d}/coords"] = rng.uniform(size=(points, 2)).astype(np.float32)
            file[f"{n:04d}/data"] = rng.standard_normal((STEPS, points, 1)).astype(np.float32)
            file[f"{n:04d}/t"] = np.arange(STEPS) * 0.1
    return path


def grid_overrides(tmp: Path, data_file: Path, *extra: str) -> list[str]:
    """train.py overrides for the tiny 1D experiment on ``data_file`` with its own cache dir."""
    return ["+experiment=burgers1d_upt", f"data_dir={tmp / 'data'}", f"cache_dir={tmp / 'cache'}", *TINY_COMMON,
            f"data.path={data_file}", "data.generate=null", "data.frame_stride=1", "model.grid_encoder.patch_size=8",
            "++model.grid_encoder.pooling=perceiver",
            "sampling.num_queries=16", "evaluate.plots=false", *extra]


class CreatesMarker:
    """Unpickling this calls open(marker, "w"): stands for any code a crafted checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def _one_step_fit(model: pl.LightningModule, datamodule, path: Path) -> Path:
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(path)
    return path


def real_checkpoints(tmp: Path) -> dict[str, Path]:
    """Checkpoints from one-step fits with the pipeline's own builders on the good data.

    ``small_stage1``/``small_stage2``: model=small on the good 1D file; ``two_field_stage1``: stage 1
    of a file with two field channels; ``trap``: a checkpoint whose hyperparameters run code when unpickled.
    """
    from upt_lightning.data import GridDataModule
    from upt_lightning.pipeline.stage1 import build_autoencoder
    from upt_lightning.pipeline.stage2 import build_operator_module

    torch.manual_seed(0)
    out = {}
    for name, data_file in (("small", grid_file(tmp / "good.h5")), ("two_field", grid_file(tmp / "uv.h5", channels=2))):
        cfg = compose_train(grid_overrides(tmp, data_file, "model=small"))
        datamodule = GridDataModule(data_file, batch_size=4, rollout_horizon=3)
        datamodule.setup("fit")
        out[f"{name}_stage1"] = _one_step_fit(build_autoencoder(cfg, datamodule, "grid"), datamodule,
                                              tmp / f"{name}_stage1.ckpt")
        if name == "small":
            out["small_stage2"] = _one_step_fit(build_operator_module(cfg, out["small_stage1"]), datamodule,
                                                tmp / "small_stage2.ckpt")
    out["trap"] = tmp / "trap.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"field_channels": {"u": 1}, "coord_dim": 1,
                                                       "payload": CreatesMarker(tmp / "code_ran")}}, out["trap"])
    return out
