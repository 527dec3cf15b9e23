"""Peak memory of one measurement: resident set size (CPU) and allocator peak (CUDA).

Linux keeps the process's RSS high-water mark in ``/proc/self/status`` (``VmHWM``) and resets
it when ``5`` is written to ``/proc/self/clear_refs``; that gives a per-measurement peak without
a fresh process. Freed heap memory that glibc keeps is handed back first (``malloc_trim``), so
the RSS before a measurement is close to the memory actually in use. Where either is missing
(other systems), the peak is the process's lifetime peak from ``getrusage`` and
``peak_rss_method`` says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import re
import resource
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
METHOD_RESET = "VmHWM reset per measurement"
METHOD_LIFETIME = "getrusage lifetime peak (not reset)"


@dataclass
class PeakMemory:
    """Filled in when the ``track_peak_memory`` block ends.

    ``peak_rss_bytes``: the process's RSS high-water mark during the block; ``rss_increase_bytes``:
    that peak minus the RSS at the start (memory the block needed, >= 0); ``device_peak_bytes``:
    ``torch.cuda.max_memory_allocated`` during the block minus the allocation at its start (CUDA
    only, else None).
    """

    peak_rss_bytes: int = 0
    rss_increase_bytes: int = 0
    device_peak_bytes: int | None = None
    method: str = METHOD_RESET


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), flags=re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _trim_heap() -> None:
    name = ctypes.util.find_library("c")
    if name is None:
        return
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _reset_peak_rss() -> bool:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _lifetime_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def current_rss_bytes() -> int:
    """Resident set size now (the lifetime peak where /proc is missing)."""
    rss = _status_kib("VmRSS")
    return rss if rss is not None else _lifetime_peak_bytes()


@contextmanager
def track_peak_memory(device: torch.device | None = None):
    """Context manager yielding a :class:`PeakMemory` that is filled in at exit."""
    device = device or torch.device("cpu")
    result = PeakMemory()
    gc.collect()
    _trim_heap()
    before = current_rss_bytes()
    if not (_reset_peak_rss() and _status_kib("VmHWM") is not None):
        result.method = METHOD_LIFETIME
    device_base = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        device_base = torch.cuda.memory_allocated(device)
    try:
        yield result
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            result.device_peak_bytes = torch.cuda.max_memory_allocated(device) - device_base
        peak = _status_kib("VmHWM") if result.method == METHOD_RESET else _lifetime_peak_bytes()
        result.peak_rss_bytes = max(peak, current_rss_bytes())
        result.rss_increase_bytes = max(result.peak_rss_bytes - before, 0)
