"""Batching of :class:`~upt_lightning.data.datasets.TrajectoryWindows` items."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def collate_windows(items: Sequence[dict], with_mask: bool = False) -> dict[str, torch.Tensor]:
    """Stack window items into a batch.

    Returns ``fields`` (B, N, C), ``targets`` (B, K, N, C), ``coords`` (B, N, d), ``dt`` (B,),
    ``traj`` (B,) and ``t0`` (B,) int64. Grid batches (``with_mask=False``) need equal point
    counts and carry no mask. Mesh batches (``with_mask=True``) are zero-padded to the largest
    point count ``N`` in the batch and add ``mask`` (B, N) bool, True at real points; the mask is
    present even when all counts agree, so a mesh batch always has the same keys.
    Items with ``padding`` (evaluation under DDP, see data/even_shards.py) give ``padding`` (B,) bool.
    """
    if not items:
        raise ValueError("cannot collate an empty list of windows")
    counts = [item["fields"].shape[0] for item in items]
    if not with_mask and len(set(counts)) > 1:
        raise ValueError(
            f"grid windows have different point counts {sorted(set(counts))}; "
            "use with_mask=True (mesh data) to pad them"
        )
    size = max(counts)
    # Grid batches need no padding: a plain stack, no zero-filled buffer.
    stack = _pad_stack if with_mask else _stack
    batch = {
        "fields": stack([item["fields"] for item in items], size, dim=0),
        "targets": stack([item["targets"] for item in items], size, dim=1),
        "coords": stack([item["coords"] for item in items], size, dim=0),
        "dt": torch.stack([torch.as_tensor(item["dt"], dtype=torch.float32) for item in items]),
        "traj": torch.tensor([int(item["traj"]) for item in items], dtype=torch.int64),
        "t0": torch.tensor([int(item["t0"]) for item in items], dtype=torch.int64),
    }
    if with_mask:
        # Built by numpy: torch runs a comparison this size on all intra-op threads, and on busy
        # cores waiting for them cost more than the rest of the collate.
        batch["mask"] = torch.from_numpy(np.arange(size) < np.asarray(counts)[:, None])
    if "padding" in items[0]:  # evaluation shards under DDP (data/even_shards.py)
        batch["padding"] = torch.tensor([bool(item["padding"]) for item in items])
    return batch


def collate_mesh_windows(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """:func:`collate_windows` with padding and mask; a named function so workers can pickle it."""
    return collate_windows(items, with_mask=True)


def _stack(tensors: list[torch.Tensor], size: int, dim: int) -> torch.Tensor:
    """Stack tensors of equal shape (``size`` is their length along ``dim``, already checked)."""
    return torch.stack(tensors)


def _pad_stack(tensors: list[torch.Tensor], size: int, dim: int) -> torch.Tensor:
    """Zero-pad each tensor along ``dim`` (the point axis) to ``size`` and stack them.

    The buffer starts uninitialised and only each row's padding is zeroed: a zero-filled buffer
    would write every element twice.
    """
    out = tensors[0].new_empty((len(tensors), *_with(tensors[0].shape, dim, size)))
    for row, tensor in enumerate(tensors):
        count = tensor.shape[dim]
        out[row].narrow(dim, 0, count).copy_(tensor)
        if count < size:
            out[row].narrow(dim, count, size - count).zero_()
    return out


def _with(shape: torch.Size, dim: int, size: int) -> tuple[int, ...]:
    """``shape`` with entry ``dim`` replaced by ``size``."""
    return tuple(size if i == dim else n for i, n in enumerate(shape))
