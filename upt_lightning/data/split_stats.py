"""Trajectory splits and the normalisation statistics of the train split.

Splitting by trajectory (never by frame) keeps every val/test trajectory unseen in training, and
statistics from the train split only keep val/test values out of the normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from upt_lightning.data.readers.base import TrajectorySource
from upt_lightning.errors import DataError

STD_FLOOR = 1e-6
"""Smallest std used for normalisation, so a constant channel does not divide by zero."""


def check_split(fractions: Sequence[float]) -> tuple[float, float, float]:
    """``fractions`` as a tuple after checking: three positive numbers summing to 1."""
    fractions = tuple(float(f) for f in fractions)
    if (
        len(fractions) != 3
        or min(fractions) <= 0
        or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)
    ):
        raise ValueError(
            "split must be three positive fractions (train, val, test) summing to 1, "
            f"got {fractions}"
        )
    return fractions


def split_trajectories(num: int, fractions: Sequence[float], seed: int) -> tuple[list[int], ...]:
    """Disjoint sorted (train, val, test) trajectory ids covering ``range(num)``.

    Val and test get ``round(fraction * num)`` ids but at least one each; train gets the rest.
    """
    fractions = check_split(fractions)
    n_val = max(1, round(fractions[1] * num))
    n_test = max(1, round(fractions[2] * num))
    if num - n_val - n_test < 1:
        raise DataError(
            f"only {num} trajectories: split {fractions} leaves no train trajectory; "
            "train, val and test each need one, so use a file with at least 3 trajectories"
        )
    order = torch.randperm(num, generator=torch.Generator().manual_seed(int(seed))).tolist()
    val, test = order[:n_val], order[n_val : n_val + n_test]
    return sorted(order[n_val + n_test :]), sorted(val), sorted(test)


def compute_stats(
    source: TrajectorySource, trajectories: Sequence[int], chunk_frames: int = 16
) -> dict[str, torch.Tensor]:
    """Per-channel mean/std over all frames and points of ``trajectories``, and coord min/max.

    Returns float32 ``field_mean`` (C,), ``field_std`` (C,) (population std, floored at
    ``STD_FLOOR``), ``coord_min`` (d,), ``coord_max`` (d,). Frames are read ``chunk_frames`` at
    a time and merged with Chan's parallel update, so memory stays bounded.
    """
    count, mean = 0, torch.zeros(source.num_channels, dtype=torch.float64)
    m2 = torch.zeros_like(mean)
    low = torch.full((source.coord_dim,), math.inf, dtype=torch.float64)
    high = -low
    for traj in trajectories:
        coords = source.coords(traj).double()
        low, high = torch.minimum(low, coords.min(0).values), torch.maximum(
            high, coords.max(0).values
        )
        steps = source.num_steps(traj)
        for first in range(0, steps, chunk_frames):
            values = source.frames(traj, range(first, min(first + chunk_frames, steps)))
            values = values.reshape(-1, source.num_channels).double()
            n, chunk_mean = values.shape[0], values.mean(0)
            delta, total = chunk_mean - mean, count + n
            mean = mean + delta * n / total
            m2 = m2 + ((values - chunk_mean) ** 2).sum(0) + delta**2 * count * n / total
            count = total
    return {
        "field_mean": mean.float(),
        "field_std": (m2 / count).sqrt().clamp_min(STD_FLOOR).float(),
        "coord_min": low.float(),
        "coord_max": high.float(),
    }
