"""Random-number-generator state in checkpoints, so that a resumed run draws what the interrupted one would have.

Lightning checkpoints hold weights, optimiser, scheduler, loop and callback states, but not the
global RNGs. Those decide each epoch's shuffling (the training DataLoader's sampler seeds itself
from ``torch``'s global generator when an epoch's iteration starts), so without them a resumed run
sees its batches in another order than an uninterrupted one. That needs the loaders to draw from
the global generator equally often in both runs: the DataModules' loaders draw only the shuffle
seed from it, the workers' base seed from their own generator (data/datamodules.py), because
persistent workers skip that draw from the second epoch on while a resumed run starts new ones.
The states are stored as tensors and plain types, so checkpoints still load with ``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch


def collect_rng_states() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA when present) generator states as tensors and plain types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`collect_rng_states` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = states["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGStateCheckpoint(pl.Callback):
    """Save the global RNG states in every checkpoint and restore them when a run resumes from one.

    A checkpoint is written after the epoch's validation; the next RNG draws of an uninterrupted run
    are those of the next epoch's train DataLoader iterator. A resumed run creates that iterator
    right after the checkpoint is restored (Lightning restores callback states first, skips the
    sanity check, then sets up the train data), so restoring here puts it at the same draws.
    """

    def state_dict(self) -> dict[str, Any]:
        return collect_rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_states(state_dict)
