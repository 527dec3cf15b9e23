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
