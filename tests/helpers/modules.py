"""Tiny models, batches and trainers shared by the LightningModule tests."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

GRID = (8, 8)
FIELDS = {"u": 1, "v": 1}
TINY_ENCODER = {"kind": "grid", "patch_size": 2, "dim": 16, "depth": 1, "num_heads": 2}
TINY_DECODER = {"dim": 16, "depth": 1, "num_heads": 2, "num_frequencies": 3}
TINY_OPERATOR = {"dim": 16, "depth": 1, "num_heads": 2}
TINY_LATENT = {"latent_tokens": 4, "latent_dim": 8}


def grid_coords(grid=GRID) -> torch.Tensor:
    """Cell-centred coordinates of a periodic unit grid, row-major: (N, 2)."""
    axes = [(torch.arange(n) + 0.5) / n for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))


def travelling_waves(num: int, steps: int, grid=GRID, seed: int = 0) -> torch.Tensor:
    """Smooth fields (num, steps, N, 2) translating by one cell per frame: learnable dynamics."""
    gen = torch.Generator().manual_seed(seed)
    xy = grid_coords(grid)
    phase = torch.rand(num, 1, 1, generator=gen) * 2 * math.pi
    amp = 0.5 + torch.rand(num, 1, 1, generator=gen)
    t = torch.arange(steps).view(1, steps, 1) / grid[0]
    u = amp * torch.sin(2 * math.pi * (xy[:, 0] - t) + phase)
    v = amp * torch.cos(2 * math.pi * (xy[:, 1] + t) + phase)
    return torch.stack([u, v], dim=-1) + 0.3


class WindowDataset(Dataset):
    """Windows of in-memory trajectories in the DataModule batch format (raw physical values)."""

    def __init__(self, trajectories: torch.Tensor, horizon: int = 1, dt: float = 0.1):
        self.data, self.horizon, self.dt = trajectories, horizon, dt
        self.per_traj = trajectories.shape[1] - horizon
        self.coords = grid_coords()

    def __len__(self):
        return self.data.shape[0] * self.per_traj

    def __getitem__(self, index):
        traj, t0 = divmod(index, self.per_traj)
        frames = self.data[traj]
        return {
            "fields": frames[t0],
            "targets": frames[t0 + 1 : t0 + 1 + self.horizon],
            "coords": self.coords,
            "dt": torch.tensor(self.dt),
            "traj": traj,
            "t0": t0,
        }


def loader(horizon: int = 1, num: int = 4, steps: int = 6, batch_size: int = 4, shuffle: bool = False):
    return DataLoader(WindowDataset(travelling_waves(num, steps), horizon), batch_size=batch_size, shuffle=shuffle)


def make_trainer(tmp_path=None, **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def short_trainer(tmp_path, name: str, train_batches: int, **kwargs) -> pl.Trainer:
    """One epoch of ``train_batches`` batches, two validation and test batches, under ``tmp_path / name``."""
    return make_trainer(tmp_path / name, max_epochs=1, limit_train_batches=train_batches, limit_val_batches=2,
                        limit_test_batches=2, **kwargs)


def tiny_autoencoder(**kwargs):
    from upt_lightning.modules import AutoencoderModule

    args = dict(field_channels=FIELDS, coord_dim=2, grid_shape=GRID, encoder=TINY_ENCODER, decoder=TINY_DECODER,
                **TINY_LATENT)
    args.update(kwargs)
    return AutoencoderModule(**args)
