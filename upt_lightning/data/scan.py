"""A full-file scan of a data source for non-finite values and times that do not increase."""

from __future__ import annotations

from upt_lightning.data.readers.base import TrajectorySource
from upt_lightning.errors import DataError


def validate_source(source: TrajectorySource, chunk_frames: int = 16) -> None:
    """Read every trajectory of ``source`` chunk by chunk and raise on the first problem.

    Checks that coordinates, times and all frames are finite and that times increase strictly.
    At most ``chunk_frames`` frames of one trajectory are in memory at once, so any file size
    can be scanned.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    for traj in range(source.num_trajectories):
        source.coords(traj)
        times = source.times(traj)
        if times.numel() > 1 and not bool((times[1:] > times[:-1]).all()):
            raise DataError(
                f"{source.path}: times of trajectory {traj} do not increase strictly "
                f"(first values {times[:5].tolist()}); fix the time coordinate in the file"
            )
        steps = source.num_steps(traj)
        for first in range(0, steps, chunk_frames):
            source.frames(traj, range(first, min(first + chunk_frames, steps)))
