"""Fault injection for the tests of interrupted runs: a real SIGKILL at a chosen point of training.

Set ``UPT_LIGHTNING_FAULT=<stage>:<event>:<n>`` in the environment of ``train.py``:

* ``stage2:step:4``  kills the process right after the 4th optimiser step of stage 2;
* ``stage1:save:2``  kills it halfway through writing ``last.ckpt`` of stage 1 for the 2nd time.

A SIGKILL cannot be caught, so nothing (no ``finally``, no Lightning teardown) runs: it is what an
out-of-memory killer or a cluster's pre-emption does. Without the variable nothing changes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl

ENV = "UPT_LIGHTNING_FAULT"
EVENTS = ("step", "save")


def requested_fault(stage: str) -> tuple[str, int] | None:
    """(event, n) of ``UPT_LIGHTNING_FAULT`` when it names ``stage``; None otherwise."""
    spec = os.environ.get(ENV, "")
    if not spec:
        return None
    parts = spec.split(":")
    if len(parts) != 3 or parts[1] not in EVENTS or not parts[2].isdigit() or int(parts[2]) < 1:
        raise ValueError(f"{ENV}={spec!r} must look like 'stage2:step:4' or 'stage1:save:2'")
    return (parts[1], int(parts[2])) if parts[0] == stage else None


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(pl.Callback):
    """SIGKILL the process once ``trainer.global_step`` reaches ``step`` (after that optimiser step)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            kill_self()


def kill_on_nth_save(n: int, name: str = "last.ckpt") -> Callable[[Path], None]:
    """A ``midway`` hook for :class:`~upt_lightning.runtime.checkpoint_io.AtomicCheckpointIO`: kill on the n-th save of ``name``."""
    saves = 0

    def midway(path: Path) -> None:
        nonlocal saves
        saves += path.name == name
        if saves >= n:
            kill_self()

    return midway


def fault_hooks(stage: str) -> tuple[list[pl.Callback], Callable[[Path], None] | None]:
    """(callbacks, checkpoint-write hook) injecting the fault requested for ``stage``, if any."""
    fault = requested_fault(stage)
    if fault is None:
        return [], None
    event, n = fault
    return ([KillAtStep(n)], None) if event == "step" else ([], kill_on_nth_save(n))
