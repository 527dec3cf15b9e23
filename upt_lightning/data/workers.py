"""How many DataLoader worker processes a run gets: a number, or "auto" from the CPUs this process may use."""

from __future__ import annotations

import os

AUTO_MAX_WORKERS = 8  # beyond this a loader of in-memory windows gains nothing, and each worker costs memory


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS has one, e.g. under SLURM or taskset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_num_workers(value) -> int | str:
    """``value`` if it is a count >= 0 or "auto"; ValueError naming the setting otherwise."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError(f"data.num_workers={value!r} must be an integer >= 0 or 'auto' (from the CPU count)")


def resolve_num_workers(value: int | str, processes_per_node: int = 1) -> int:
    """The worker count for ``value``: itself when a number; for "auto", the CPUs left to each training
    process of this node after its own main process (at most ``AUTO_MAX_WORKERS``), so that the loaders
    of all processes together never ask for more workers than the machine has CPUs (torch warns then)."""
    check_num_workers(value)
    if value != "auto":
        return int(value)
    per_process = usable_cpus() // max(1, int(processes_per_node))
    return max(0, min(AUTO_MAX_WORKERS, per_process - 1))
