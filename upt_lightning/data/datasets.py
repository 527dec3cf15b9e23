"""Windows of consecutive frames cut from trajectories: next-step pairs and rollout windows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from upt_lightning.data.readers.base import TrajectorySource
from upt_lightning.errors import DataError


class TrajectoryWindows(Dataset):
    """Item ``i`` is a window of ``horizon + 1`` frames of one trajectory, read on demand.

    Windows start at frames ``start, start + stride, ...`` of each trajectory in
    ``trajectories``; a window starting at ``t0`` holds frames ``t0, t0 + s, ..., t0 + K*s``
    (``s = frame_stride``, ``K = horizon``). ``max_windows_per_traj`` keeps only the first
    windows of each trajectory (1 gives one rollout per trajectory).

    Item: ``{"fields": (N, C) frame t0, "targets": (K, N, C), "coords": (N, d),
    "dt": () float32 time from frame t0 to t0 + s, "traj": int, "t0": int}``, raw values.
    """

    def __init__(
        self,
        source: TrajectorySource,
        trajectories: Sequence[int],
        horizon: int = 1,
        stride: int = 1,
        frame_stride: int = 1,
        start: int = 0,
        max_windows_per_traj: int | None = None,
    ) -> None:
        for name, value, low in (
            ("horizon", horizon, 1),
            ("stride", stride, 1),
            ("frame_stride", frame_stride, 1),
            ("start", start, 0),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if max_windows_per_traj is not None and max_windows_per_traj < 1:
            raise ValueError(
                f"max_windows_per_traj must be None or >= 1, got {max_windows_per_traj}"
            )
        if len(trajectories) == 0:
            raise ValueError("trajectories is empty; give at least one trajectory index")
        self.source = source
        self.trajectories = [int(t) for t in trajectories]
        self.horizon = horizon
        self.stride = stride
        self.frame_stride = frame_stride
        self.start = start
        self.max_windows_per_traj = max_windows_per_traj
        span = horizon * frame_stride
        counts = []
        for traj in self.trajectories:
            steps = source.num_steps(traj)
            if start + span >= steps:
                raise DataError(
                    f"{source.path}: trajectory {traj} has {steps} time steps, but a window of "
                    f"horizon {horizon} with frame_stride {frame_stride} starting at frame {start} "
                    f"needs {start + span + 1}; lower the horizon, frame_stride or start"
                )
            count = (steps - 1 - span - start) // stride + 1
            counts.append(
                count if max_windows_per_traj is None else min(count, max_windows_per_traj)
            )
        # Cumulative counts instead of a list of (traj, t0) pairs: memory independent of T.
        self._ends = np.cumsum(counts)

    def __len__(self) -> int:
        return int(self._ends[-1])

    def window(self, index: int) -> tuple[int, int]:
        """``(trajectory, t0)`` of window ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        index %= len(self)
        slot = int(np.searchsorted(self._ends, index, side="right"))
        first = int(self._ends[slot - 1]) if slot > 0 else 0
        return self.trajectories[slot], self.start + (index - first) * self.stride

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        traj, t0 = self.window(index)
        s = self.frame_stride
        # One HDF5 slice for the window's frames; times and coordinates come from the source's
        # per-trajectory cache (read once, not once per window).
        frames = self.source.frames(traj, range(t0, t0 + self.horizon * s + 1, s))
        times = self.source.cached_times(traj)
        dt = float(times[t0 + s] - times[t0])
        if not dt > 0:
            raise DataError(
                f"{self.source.path}: trajectory {traj} has times {times[t0].item()} and "
                f"{times[t0 + s].item()} at frames {t0} and {t0 + s}; times must increase"
            )
        return {
            "fields": frames[0],
            "targets": frames[1:],
            "coords": self.source.coords(traj),
            "dt": torch.tensor(dt, dtype=torch.float32),
            "traj": traj,
            "t0": t0,
        }
