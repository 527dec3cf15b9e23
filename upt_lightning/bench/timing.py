"""Wall-clock timing of a callable: warm-up runs, then the median of repeated runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a CUDA timing covers the work and not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median and fastest of ``repeats`` timed calls."""

    median_s: float
    min_s: float
    repeats: int


def median_time(
    fn: Callable[[], object], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> Timing:
    """Run ``fn`` ``warmup`` times untimed (lazy initialisation, allocator and cache warm-up),
    then ``repeats`` times timed; the median is robust to the odd run slowed by other processes."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = device or torch.device("cpu")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return Timing(median_s=statistics.median(times), min_s=min(times), repeats=repeats)


def interleaved_times(
    fns: Mapping[Hashable, Callable[[], object]], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> dict[Hashable, Timing]:
    """:func:`median_time` of several callables, timed in rounds that call each of them once.

    On a shared machine the load changes over minutes; timing one callable after the other would
    charge a busy spell to whichever ran then, whereas rounds spread it over all of them, so their
    ratios hold up better. Returns a Timing per key of ``fns``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    device = device or torch.device("cpu")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[Hashable, list[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[key].append(time.perf_counter() - start)
    return {key: Timing(statistics.median(t), min(t), repeats) for key, t in times.items()}
