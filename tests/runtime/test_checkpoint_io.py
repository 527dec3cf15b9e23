"""Atomic checkpoint writes under a real SIGKILL, the choice of the checkpoint to resume from, RNG states."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from upt_lightning.runtime.checkpoint_io import AtomicCheckpointIO, atomic_copy, remove_stale_temp_files
from upt_lightning.pipeline.resume import find_resume_checkpoint
from upt_lightning.runtime.rng_state import collect_rng_states, set_rng_states

REPO = Path(__file__).resolve().parents[2]


def training_checkpoint(step: int, epoch: int) -> dict:
    """What Lightning writes (the keys a resume needs), with a weight that tells the files apart."""
    return {"epoch": epoch, "global_step": step, "loops": {"fit_loop": {}}, "optimizer_states": [],
            "state_dict": {"w": torch.full((64, 64), float(step))}, "hyper_parameters": {"lr": 1e-3}}


def test_sigkill_halfway_through_a_save_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(training_checkpoint(3, 0), target)
    before = target.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal, torch
        from upt_lightning.runtime.checkpoint_io import AtomicCheckpointIO
        io = AtomicCheckpointIO(midway=lambda path: os.kill(os.getpid(), signal.SIGKILL))
        io.save_checkpoint({{"state_dict": {{"w": torch.zeros(512, 512)}}}}, {str(target)!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert target.read_bytes() == before  # the final name never held the half-written bytes
    temps = [p for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert len(temps) == 1 and temps[0].name.startswith(".last.ckpt.") and 0 < temps[0].stat().st_size
    assert remove_stale_temp_files(tmp_path) == temps and sorted(tmp_path.iterdir()) == [target]


def test_atomic_save_and_copy_write_complete_loadable_files(tmp_path):
    path = tmp_path / "sub" / "a.ckpt"
    AtomicCheckpointIO().save_checkpoint(training_checkpoint(5, 1), path)
    copy = tmp_path / "cache" / "b.ckpt"
    atomic_copy(path, copy)
    for saved in (path, copy):
        loaded = torch.load(saved, weights_only=True)
        assert loaded["global_step"] == 5 and torch.equal(loaded["state_dict"]["w"], torch.full((64, 64), 5.0))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.ckpt", "b.ckpt"]


def test_truncated_last_ckpt_is_moved_aside_and_the_previous_good_one_resumes(tmp_path, caplog):
    good = tmp_path / "best-epoch001.ckpt"
    torch.save(training_checkpoint(6, 1), good)
    last = tmp_path / "last.ckpt"
    torch.save(training_checkpoint(9, 2), last)
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # what a kill mid-copy leaves
    with caplog.at_level(logging.WARNING, logger="upt_lightning.pipeline"):
        assert find_resume_checkpoint(tmp_path) == good
    assert "cannot be resumed from" in caplog.text and "last.ckpt" in caplog.text
    assert (tmp_path / "last.ckpt.unreadable").is_file()  # kept, not deleted, and not read again
    assert find_resume_checkpoint(tmp_path) == good


def test_resume_picks_the_furthest_readable_training_checkpoint(tmp_path):
    torch.save(training_checkpoint(6, 1), tmp_path / "best-epoch001.ckpt")
    torch.save(training_checkpoint(9, 2), tmp_path / "best-epoch002.ckpt")
    torch.save(training_checkpoint(9, 2), tmp_path / "last.ckpt")
    weights_only = training_checkpoint(12, 3)
    del weights_only["optimizer_states"], weights_only["loops"]
    torch.save(weights_only, tmp_path / "weights.ckpt")  # further, but cannot resume training
    assert find_resume_checkpoint(tmp_path) == tmp_path / "last.ckpt"  # ties go to last.ckpt
    assert find_resume_checkpoint(tmp_path / "missing") is None


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    import random

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    torch.save({"rng": collect_rng_states()}, tmp_path / "rng.ckpt")
    expected = (torch.rand(4), np.random.rand(4), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    set_rng_states(torch.load(tmp_path / "rng.ckpt", weights_only=True)["rng"])
    again = (torch.rand(4), np.random.rand(4), random.random())
    assert torch.equal(expected[0], again[0])
    np.testing.assert_array_equal(expected[1], again[1])
    assert expected[2] == again[2]


@pytest.mark.parametrize("spec", ["stage2:bogus:1", "stage2:step:0", "stage2:step"])
def test_malformed_fault_spec_is_refused(spec, monkeypatch):
    from upt_lightning.runtime.faults import fault_hooks

    monkeypatch.setenv("UPT_LIGHTNING_FAULT", spec)
    with pytest.raises(ValueError, match="UPT_LIGHTNING_FAULT"):
        fault_hooks("stage2")
