"""Tear the default process group down while the interpreter is still alive.

Lightning registers ``destroy_process_group`` at exit for NCCL only. A gloo group left alive
until interpreter finalisation can abort the process (SIGABRT, "terminate called without an
active exception"): gloo's worker threads still hold work objects whose tensors reach into
Python when the interpreter is already being torn down. A ``ddp_spawn`` worker then dies at
the very end of an otherwise finished fit, and the launcher fails the whole run.
"""

from __future__ import annotations

import atexit

import torch.distributed as dist

_registered = False


def _destroy_if_initialized() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def destroy_process_group_at_exit() -> bool:
    """Once per process, when a default process group exists, destroy it at interpreter exit.

    atexit handlers run before the interpreter finalises, so the group's threads are joined
    while Python objects can still be released. Returns whether a handler is registered.
    """
    global _registered
    if not _registered and dist.is_available() and dist.is_initialized():
        atexit.register(_destroy_if_initialized)
        _registered = True
    return _registered
