"""A run stopped by a signal exits non-zero and says how to continue it.

train.py gets a real SIGTERM (what SLURM and most schedulers send on pre-emption) in stage 2: it must
exit 143 naming its run dir, write no results.json, and the same command must then continue the run.
"""

import json
import math
import signal
import sys

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException

from helpers.entry import run_train, tiny_overrides
from upt_lightning.errors import interrupting_signal

FAULT = "UPT_LIGHTNING_FAULT"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def test_interrupting_signal_tells_sigterm_and_ctrl_c_from_other_exits():
    assert interrupting_signal(SIGTERMException()) == signal.SIGTERM
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)  # what Lightning's _call_and_handle_interrupt does on Ctrl-C
    except SystemExit as ctrl_c:
        assert interrupting_signal(ctrl_c) == signal.SIGINT
    assert interrupting_signal(KeyboardInterrupt()) == signal.SIGINT
    assert interrupting_signal(SystemExit(2)) is None


@pytest.mark.slow
def test_sigterm_exits_143_saying_how_to_continue_and_the_same_command_continues(tmp_path):
    run = tmp_path / "run"
    args = [*tiny_overrides("burgers_upt", tmp_path / "data"), f"hydra.run.dir={run}",
            f"cache_dir={tmp_path / 'cache'}", "callbacks.progress=null", "stage2.max_epochs=2",
            "evaluate.plots=false", "evaluate.superres=false"]
    # A real SIGTERM after stage 2's 4th step (epoch 1 of 3 steps each): Lightning's handler stops the fit.
    stopped = run_train(args, env={**ONE_THREAD, FAULT: "stage2:term:4"})
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    hint = ("interrupted by SIGTERM before the results were written; to continue from the run's checkpoints, "
            f"rerun the same command with hydra.run.dir={run}")
    assert hint in stopped.stderr and "Traceback" not in stopped.stderr
    log = (run / "train.log").read_text()
    assert "Received SIGTERM" in log and hint in log
    assert not (run / "results.json").exists()

    finished = run_train(args, env=ONE_THREAD)
    assert finished.returncode == 0, finished.stderr[-3000:]
    last = run / "stage2" / "checkpoints" / "last.ckpt"  # written at the end of epoch 0, before the stop
    assert f"stage2: resuming from {last} (epoch 0, step 3 done)" in (run / "train.log").read_text()
    assert math.isfinite(json.loads((run / "results.json").read_text())["objective"])
