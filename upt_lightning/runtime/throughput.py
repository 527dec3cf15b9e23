"""Training throughput of a fit: samples per second, and the accelerator's peak memory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning.pytorch as pl
import torch


def batch_size_of(batch) -> int:
    """Samples in a training batch of the DataModules (``fields``) or of a latent cache (``latents``)."""
    for key in ("fields", "latents"):
        value = batch.get(key) if isinstance(batch, dict) else None
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    return 0


class TrainingThroughput(pl.Callback):
    """Writes ``{"samples_per_s", "samples", "train_s", "max_memory_allocated_mb"}`` to ``path`` when a fit ends.

    ``train_s`` runs from the first training batch to the end of the fit, less the time spent in
    validation; it includes data loading. Samples are counted on every rank (each rank's batches times the
    world size). On CUDA the device is synchronised once, at the end, so queued work is counted; the peak
    memory is ``torch.cuda.max_memory_allocated`` of this process's device (None on the CPU).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._reset()

    def _reset(self) -> None:
        self.samples, self.start, self.validation_s, self._val_start = 0, None, 0.0, None

    def _now(self, trainer: pl.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        self._reset()
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += batch_size_of(batch)

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.training and self.start is not None:
            self._val_start = self._now(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._val_start is not None:
            self.validation_s += self._now(trainer) - self._val_start
            self._val_start = None

    def on_train_end(self, trainer, pl_module) -> None:
        if self.start is None or not trainer.is_global_zero:
            return
        train_s = max(self._now(trainer) - self.start - self.validation_s, 1e-9)
        samples = self.samples * trainer.world_size
        device = trainer.strategy.root_device
        memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"samples_per_s": samples / train_s, "samples": samples,
                                         "train_s": round(train_s, 3), "device": str(device),
                                         "max_memory_allocated_mb": memory}, indent=2))
