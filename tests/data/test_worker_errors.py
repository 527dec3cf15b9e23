"""A user error raised in a spawned worker is reported by its message, like on one process; bugs are not."""

from __future__ import annotations

import traceback

import pytest
import torch.multiprocessing as mp

from upt_lightning.errors import DataError
from upt_lightning.errors import ConfigError, NonFiniteLossError, user_error_message

MESSAGE = "non-finite training loss at global step 1: L_forward=nan\nset nan_policy=skip to skip such batches"


def _raise_in_rank_one(rank: int, kind: str) -> None:
    """Run by torch's spawn in 2 fresh processes (as Lightning's ddp_spawn launcher does)."""
    if rank != 1:
        return
    if kind == "nonfinite":
        raise NonFiniteLossError(MESSAGE)
    if kind == "chained":
        try:
            {}["stage2"]
        except KeyError as missing:
            raise ConfigError("stage2.lr must be positive, got -1") from missing
    if kind == "data":
        raise DataError("data.h5: dataset 'tensor' holds NaN at trajectory 3")
    if kind == "missing":
        raise FileNotFoundError("autoencoder_ckpt=stage1.ckpt does not exist")
    if kind == "bug":
        raise RuntimeError("ValueError: index out of range")  # a message that looks like an error line


def _worker_error(kind: str) -> mp.ProcessRaisedException:
    with pytest.raises(mp.ProcessRaisedException) as raised:
        mp.spawn(_raise_in_rank_one, args=(kind,), nprocs=2, join=True)
    return raised.value


def _formatted_in_this_process(kind: str) -> mp.ProcessRaisedException:
    """What torch's spawn hands the launcher for a worker's error, produced here without the spawn:
    the message is ``traceback.format_exc()`` of the worker after a header line
    (``torch.multiprocessing.spawn._wrap`` and ``ProcessContext.join``)."""
    try:
        _raise_in_rank_one(1, kind)
    except Exception:
        trace = traceback.format_exc()
    return mp.ProcessRaisedException(f"\n\n-- Process 1 terminated with the following error:\n{trace}", 1, 0)


def test_a_user_error_from_a_spawned_worker_keeps_its_whole_message():
    error = _worker_error("nonfinite")
    assert "Traceback" in str(error)  # what torch hands over: the worker's formatted traceback
    assert user_error_message(error) == MESSAGE  # a message over two lines, whole


def test_a_bug_in_a_spawned_worker_keeps_its_traceback():
    assert user_error_message(_worker_error("bug")) is None


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("nonfinite", MESSAGE),
        ("chained", "stage2.lr must be positive, got -1"),  # the last exception of a chain
        ("data", "data.h5: dataset 'tensor' holds NaN at trajectory 3"),
        ("missing", "autoencoder_ckpt=stage1.ckpt does not exist"),  # a builtin user error
        ("bug", None),
    ],
)
def test_the_message_is_that_of_the_last_exception_when_it_is_a_user_error(kind, expected):
    assert user_error_message(_formatted_in_this_process(kind)) == expected


def test_errors_of_this_process():
    assert user_error_message(ConfigError("sampling.num_queries must be positive")) == (
        "sampling.num_queries must be positive")
    assert user_error_message(RuntimeError("CUDA out of memory")) is None
