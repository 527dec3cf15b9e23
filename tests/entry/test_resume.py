"""train.py killed with a real SIGKILL and started again with the same command continues where it stopped.

One uninterrupted reference run and one run interrupted three times over the same command:
a kill in the middle of a stage-1 epoch, a kill halfway through rewriting stage 2's last.ckpt, and
a last.ckpt truncated as a non-atomic writer would leave it. The interrupted run must end with the
reference's weights, optimiser state, LR schedule, step count and curriculum weights.
"""

import re
import signal

import pytest
import torch

from helpers.entry import run_train, tiny_overrides
from upt_lightning.pipeline.resume import config_differences

FAULT = "UPT_LIGHTNING_FAULT"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the same (and fastest) thread count in every run, so results compare exactly


def command(tmp_path, name):
    return [*tiny_overrides("burgers_upt", tmp_path / "data"), f"hydra.run.dir={tmp_path / name}",
            f"cache_dir={tmp_path / ('cache_' + name)}", "evaluate.test=false", "callbacks.progress=null",
            "stage1.max_epochs=2", "stage2.max_epochs=3", "loss.inverse_loss_warmup_epochs=1",
            # validate (and so write best-*.ckpt) every epoch: step 3 falls back to that checkpoint
            "stage1.trainer.check_val_every_n_epoch=1", "stage2.trainer.check_val_every_n_epoch=1"]


def test_a_run_saved_with_removed_stage2_settings_resumes_when_they_were_off():
    """stage2.input_noise and stage2.anchor were removed (docs/accuracy.md, "Measured, not kept")."""
    current = {"seed": 0, "stage2": {"lr": 1e-3}}
    assert config_differences({"seed": 0, "stage2": {"lr": 1e-3, "input_noise": 0.0, "anchor": False}}, current) == []
    assert config_differences({"seed": 0, "stage2": {"lr": 1e-3, "anchor": True}}, current) == []  # after training
    # Noise trained another model: continuing it without would mix two runs.
    assert config_differences({"seed": 0, "stage2": {"lr": 1e-3, "input_noise": 0.05}}, current) == [
        "stage2.input_noise: 0.05 -> '<absent>'"]


def curriculum(log: str) -> dict[int, str]:
    """{epoch: logged inverse weights} of stage 2 (the last value logged for each epoch)."""
    return {int(e): w for e, w in re.findall(r"epoch (\d+) \([^)]*\): inverse-loss weights (\{.*\})", log)}


def cached_autoencoder(tmp_path, name):
    return sorted((tmp_path / f"cache_{name}").glob("*/autoencoder.ckpt"))


def load(path):
    return torch.load(path, weights_only=True)


def assert_same_tensors(a, b, what):
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=what)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            assert_same_tensors(a[key], b[key], f"{what}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{what}[{i}]")
    else:
        assert a == b, what


@pytest.mark.slow
def test_sigkilled_runs_resume_with_the_same_command_and_match_an_uninterrupted_run(tmp_path):
    reference = run_train(command(tmp_path, "ref"), env=ONE_THREAD)
    assert reference.returncode == 0, reference.stderr[-3000:]

    run = tmp_path / "run"
    args = command(tmp_path, "run")
    # 1. Killed mid-epoch in stage 1 (after the 4th of 6 steps): no stage-1 cache entry may appear.
    killed = run_train(args, env={**ONE_THREAD, FAULT: "stage1:step:4"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert cached_autoencoder(tmp_path, "run") == []
    assert load(run / "stage1/checkpoints/last.ckpt")["global_step"] == 3

    # 2. Same command: stage 1 resumes, finishes and is cached; killed halfway through the second
    #    rewrite of stage 2's last.ckpt, which must still hold the complete epoch-0 checkpoint.
    killed = run_train(args, env={**ONE_THREAD, FAULT: "stage2:save:2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert "stage1: resuming from" in log and "(epoch 0, step 3 done)" in log
    assert len(cached_autoencoder(tmp_path, "run")) == 1
    last = run / "stage2/checkpoints/last.ckpt"
    assert load(last)["global_step"] == 3
    assert list((run / "stage2/checkpoints").glob(".last.ckpt.*.tmp"))  # the interrupted write

    # 3. A truncated last.ckpt (what a non-atomic copy leaves) must not block the resume either.
    last.write_bytes(last.read_bytes()[:1000])
    finished = run_train(args, env=ONE_THREAD)
    assert finished.returncode == 0, finished.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert "skipping a checkpoint that cannot be resumed from" in log
    # The furthest readable checkpoint: best-epoch001 when epoch 1 improved the validation metric, else
    # the complete epoch-0 one (which one depends on the training, not on the resume logic).
    resumed = re.search(r"stage2: resuming from \S+\.ckpt \(epoch (\d), step (\d+) done\)", log)
    assert resumed and (resumed.group(1), resumed.group(2)) in {("1", "6"), ("0", "3")}, log[-2000:]
    assert (run / "stage2/checkpoints/last.ckpt.unreadable").is_file()
    assert not list((run / "stage2/checkpoints").glob(".*.tmp"))

    ref_log = (tmp_path / "ref" / "train.log").read_text()
    assert curriculum(log) == curriculum(ref_log)
    assert curriculum(log)[2] != curriculum(log)[0]  # the ramp did move within the run
    expected, got = load(tmp_path / "ref/stage2/checkpoints/last.ckpt"), load(last)
    assert (got["epoch"], got["global_step"]) == (expected["epoch"], expected["global_step"]) == (2, 9)
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        assert_same_tensors(expected[key], got[key], key)
    assert_same_tensors(load(cached_autoencoder(tmp_path, "ref")[0])["state_dict"],
                        load(cached_autoencoder(tmp_path, "run")[0])["state_dict"], "stage 1")
