"""Input checks shared by the models, so bad input fails early with a message that says the fix."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import torch

# Names check_finite lets through (see allow_nonfinite).
_ALLOWED_NONFINITE: ContextVar[frozenset[str]] = ContextVar("allowed_nonfinite", default=frozenset())


def check_points_tensor(
    name: str,
    tensor: torch.Tensor,
    channels: int,
    batch: int | None = None,
    count: int | None = None,
) -> None:
    """Check that ``tensor`` is ``(B, N, channels)`` with the given ``B`` and ``N`` when those are set."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, N, {channels}), got {type(tensor).__name__}")
    expected = f"({batch if batch is not None else 'B'}, {count if count is not None else 'N'}, {channels})"
    if (
        tensor.ndim != 3
        or tensor.shape[2] != channels
        or (batch is not None and tensor.shape[0] != batch)
        or (count is not None and tensor.shape[1] != count)
    ):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")


@contextmanager
def allow_nonfinite(*names: str) -> Iterator[None]:
    """Within the block ``check_finite`` accepts the tensors ``names``.

    For model outputs fed back into a model, such as the decoded fields the cycle loss re-encodes: their
    NaN/Inf means a diverged model, which the training step's ``nan_policy`` reports with the loss terms,
    not bad input data (and the check's host sync is saved).
    """
    token = _ALLOWED_NONFINITE.set(_ALLOWED_NONFINITE.get() | frozenset(names))
    try:
        yield
    finally:
        _ALLOWED_NONFINITE.reset(token)


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Reject NaN or infinite entries (a corrupted file or a diverged run upstream)."""
    if name in _ALLOWED_NONFINITE.get():
        return
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(
            f"{name} contains {bad} NaN or infinite values; clean or re-normalise the input data "
            "(padding entries are allowed only where meta['mask'] is False)"
        )


def check_positive_int(name: str, value: int) -> int:
    """Return ``int(value)`` after checking it is at least 1."""
    if int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_heads(dim: int, num_heads: int) -> None:
    """Attention splits ``dim`` into ``num_heads`` equal heads."""
    if dim % num_heads:
        raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}; pick dim as a multiple of num_heads")


def read_mask(meta: Mapping | None, batch: int, count: int, device: torch.device) -> torch.Tensor:
    """``meta['mask']`` as a ``(B, N)`` bool tensor (True = real point); all True when absent."""
    mask = None if meta is None else meta.get("mask")
    if mask is None:
        return torch.ones(batch, count, dtype=torch.bool, device=device)
    if not isinstance(mask, torch.Tensor) or mask.shape != (batch, count):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"meta['mask'] must be a ({batch}, {count}) bool tensor matching the points, got {shape}")
    if mask.dtype != torch.bool:
        raise ValueError(f"meta['mask'] must have dtype torch.bool (True = real point), got {mask.dtype}")
    return mask.to(device)
