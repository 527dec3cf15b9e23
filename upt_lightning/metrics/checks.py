"""Argument and input checks of the metrics: every problem becomes a ValueError that names the fix."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def spatial_grid_shape(grid_shape: Sequence[int] | None) -> tuple[int, ...] | None:
    """Return the grid's axes with more than one point, or None for meshes.

    An axis of length 1 has no boundary and no spectrum, so a 1D field stored as (1, X) is
    measured as the 1D grid (X,); the point count N = prod(grid_shape) is unchanged by this.
    """
    if grid_shape is None:
        return None
    shape = tuple(int(s) for s in grid_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"grid_shape must list positive axis lengths, e.g. (64, 64); got {grid_shape!r}")
    spatial = tuple(s for s in shape if s > 1)
    if not spatial:
        raise ValueError(f"grid_shape {shape} has a single point; pass grid_shape=None for meshes")
    return spatial


def checked_channel_names(channel_names: Sequence[str] | None, num_channels: int) -> list[str]:
    """Channel names for per-channel keys: the given ones, or "ch0", "ch1", ... by default."""
    if int(num_channels) < 1:
        raise ValueError(f"num_channels must be at least 1, got {num_channels}")
    if channel_names is None:
        return [f"ch{i}" for i in range(num_channels)]
    names = [str(name) for name in channel_names]
    if len(names) != num_channels:
        raise ValueError(
            f"{len(names)} channel_names {names} given for num_channels={num_channels}; give one per channel"
        )
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"channel_names must be distinct non-empty strings, got {names}")
    return names


def checked_band_edges(f_low: int, f_high: int) -> tuple[int, int]:
    """Radial wavenumbers splitting low [0, f_low), mid [f_low, f_high) and high [f_high, ...)."""
    if not 0 < int(f_low) < int(f_high):
        raise ValueError(f"need 0 < f_low < f_high for the fRMSE bands, got f_low={f_low}, f_high={f_high}")
    return int(f_low), int(f_high)


def check_inputs(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    lead_shape: str,
    num_channels: int,
    grid_shape: tuple[int, ...] | None,
) -> None:
    """Check pred/target (..., N, C) against each other, the channel count, the grid and the mask.

    lead_shape names the axes before N for messages ("B" or "B, K"); mask is (B, N) bool with
    True at real points. Only real points must be finite, so padding may hold anything.
    """
    ndim = lead_shape.count(",") + 3
    layout = f"({lead_shape}, N, C)"
    for name, tensor in (("pred", pred), ("target", target)):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must be a floating-point tensor {layout}, got {kind}")
        if tensor.ndim != ndim:
            raise ValueError(f"{name} must have shape {layout}, got {tuple(tensor.shape)}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape {layout}"
        )
    if pred.shape[-1] != num_channels:
        raise ValueError(
            f"inputs have {pred.shape[-1]} channels, the metric was built for num_channels={num_channels}"
        )
    num_points = pred.shape[-2]
    if grid_shape is not None and num_points != math.prod(grid_shape):
        raise ValueError(
            f"inputs have N={num_points} points but grid_shape {grid_shape} holds {math.prod(grid_shape)}; "
            "flatten the grid row-major or pass grid_shape=None for meshes"
        )
    valid = None
    if mask is not None:
        expected = (pred.shape[0], num_points)
        if mask.dtype != torch.bool or tuple(mask.shape) != expected:
            raise ValueError(
                f"mask must be a bool tensor {expected} (True = real point), got {mask.dtype} {tuple(mask.shape)}"
            )
        if not mask.any(dim=1).all():
            raise ValueError("mask marks a sample without any real point; drop empty samples from the batch")
        if grid_shape is not None and not mask.all():
            raise ValueError("grid inputs cannot be padded: pass mask=None or grid_shape=None for meshes")
        valid = mask.view(mask.shape[0], *([1] * (ndim - 3)), num_points, 1).expand_as(pred)
    for name, tensor in (("pred", pred), ("target", target)):
        finite = torch.isfinite(tensor) if valid is None else torch.isfinite(tensor) | ~valid
        if not finite.all():
            raise ValueError(f"{name} holds NaN or inf at real points; metrics need finite fields")
