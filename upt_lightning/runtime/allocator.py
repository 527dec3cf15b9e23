"""Keep freed memory inside the process (glibc's malloc), so large CPU tensors are not faulted in anew.

By default glibc serves every allocation above its mmap threshold (at most 32 MB, adjusted at run time)
with a fresh ``mmap`` and returns it to the kernel on ``free``, and it gives the top of the heap back
whenever more than its trim threshold lies free there. A CPU forward pass that decodes a whole grid
allocates tensors of tens of MB (a (16, 4096, 128) float32 activation is 32 MB, the attention bias of the
default decoder 64 MB) and frees them a moment later, so the next pass faults every one of their pages in
again: the kernel zeroes 4 KB at a time. On the default experiment that was 82 million page faults and
180 s of system time in a 12-minute run, and a full-grid decode of the default decoder took 1.9x as long
as with the memory kept (``python -m upt_lightning.bench allocator``).

:func:`keep_freed_memory` raises both thresholds, so freed blocks stay in the heap and are reused. The
cost: the process keeps its peak heap size until it exits instead of shrinking after a peak. It changes
nothing else, and no result: the same numbers are computed in the same order.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("upt_lightning.runtime")

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest value mallopt takes (an int): blocks up to 2 GiB come from the heap and stay there when freed.
KEEP_BYTES = 2**31 - 1

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to :data:`KEEP_BYTES` for this process; True when applied.

    False, and nothing changed, where the C library is not glibc (macOS, Windows, musl): those allocators
    keep their own policies. Safe to call more than once (applied once).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no C library found, or one without mallopt (musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold first (it also stops glibc adjusting it at run time)
    _applied = bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    if _applied:
        log.debug("malloc keeps freed memory (mmap and trim thresholds %d bytes)", KEEP_BYTES)
    return _applied
