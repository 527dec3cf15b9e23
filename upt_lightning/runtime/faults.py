"""Fault injection for the tests of interrupted runs: a real signal at a chosen point of training.

Set ``UPT_LIGHTNING_FAULT=<stage>:<event>:<n>`` in the environment of ``train.py``:

* ``stage2:step:4``  kills the process (SIGKILL) right after the 4th optimiser step of stage 2;
* ``stage2:term:4``  sends it a SIGTERM there instead, as a scheduler pre-empting the job does;
* ``stage1:save:2``  kills it halfway through writing ``last.ckpt`` of stage 1 for the 2nd time.

A SIGKILL cannot be caught, so nothing (no ``finally``, no Lightning teardown) runs: it is what an
out-of-memory killer does. A SIGTERM goes through Lightning's own handler, which stops the fit at the
next batch. Without the variable nothing changes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl

ENV = "UPT_LIGHTNING_FAULT"
# the signal each per-step event sends
STEP_SIGNALS = {"step": signal.SIGKILL, "term": signal.SIGTERM}
EVENTS = (*STEP_SIGNALS, "save")


def requested_fault(stage: str) -> tuple[str, int] | None:
    """(event, n) of ``UPT_LIGHTNING_FAULT`` when it names ``stage``; None otherwise."""
    spec = os.environ.get(ENV, "")
    if not spec:
        return None
    parts = spec.split(":")
    if len(parts) != 3 or parts[1] not in EVENTS or not parts[2].isdigit() or int(parts[2]) < 1:
        raise ValueError(f"{ENV}={spec!r} must look like 'stage2:step:4', 'stage2:term:4' or 'stage1:save:2'")
    return (parts[1], int(parts[2])) if parts[0] == stage else None


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class SignalAtStep(pl.Callback):
    """Send ``signum`` to this process once ``trainer.global_step`` reaches ``step`` (after that optimiser step)."""

    def __init__(self, step: int, signum: signal.Signals) -> None:
        self.step = step
        self.signum = signum

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        # After a SIGTERM, Lightning raises before the next batch: this hook does not run again.
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), self.signum)


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
    return ([], kill_on_nth_save(n)) if event == "save" else ([SignalAtStep(n, STEP_SIGNALS[event])], None)
