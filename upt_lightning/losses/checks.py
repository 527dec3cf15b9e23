"""Argument checks shared by the loss functions."""

from __future__ import annotations

import math
import numbers
import operator

import torch


def check_weight(name: str, value) -> float:
    """``value`` as a float after checking that it is a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (0 switches the term off), got {value}")
    return value


def check_non_negative_int(name: str, value) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_same_shape(what: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{what}: prediction has shape {tuple(pred.shape)} but target has {tuple(target.shape)}; "
            "they must match"
        )


def check_latent(latent: torch.Tensor, batch: int) -> None:
    if latent.ndim != 3 or latent.shape[0] != batch:
        raise ValueError(f"latent must be (B, T, D) with B={batch} like the points, got {tuple(latent.shape)}")


def check_decoding_points(query_positions: torch.Tensor, coords: torch.Tensor, latent: torch.Tensor) -> None:
    """L_inv_dec decodes at ``query_positions`` and re-encodes at ``coords``: the same points (B, N, d)."""
    if query_positions.shape[:2] != coords.shape[:2]:
        raise ValueError(
            f"query_positions {tuple(query_positions.shape)} and coords {tuple(coords.shape)} must be the "
            "same points (B, N, d): the encoder reads the fields decoded at query_positions at coords"
        )
    check_latent(latent, coords.shape[0])
