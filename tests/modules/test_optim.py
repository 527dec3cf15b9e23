"""The optim group: warm-up and schedules, the time-budget clock, settings errors, Adam vs AdamW."""

from __future__ import annotations

import math
import time

import pytest
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.trainer.states import RunningStage

from upt_lightning.modules.optim import budget_clock, build_optimizer, lr_factor


def test_warmup_then_cosine_to_the_floor():
    total, warmup = 100, 10
    factors = [lr_factor(step, total, warmup, "cosine", 0.1) for step in range(total + 1)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert factors[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factors[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # never rises after the warm-up
    assert lr_factor(60, total, warmup, "constant", 0.1) == 1.0


def test_time_budget_drives_the_schedule_when_it_runs_ahead_of_the_steps():
    # 1000 planned steps but half the budget spent after 100: the schedule is half way down its cosine.
    assert lr_factor(100, 1000, 0, "cosine", 0.0, time_fraction=0.5) == pytest.approx(0.5)
    assert lr_factor(100, 1000, 0, "cosine", 0.0, time_fraction=1.0) == pytest.approx(0.0)
    # Steps ahead of the clock win too, and with no budget the clock is ignored.
    assert lr_factor(900, 1000, 0, "cosine", 0.0, time_fraction=0.1) == lr_factor(900, 1000, 0, "cosine", 0.0)
    # The warm-up ends when either the steps or the clock reach it.
    assert lr_factor(1, 1000, 50, "cosine", 0.0, time_fraction=0.05) == pytest.approx(1.0)


def test_budget_clock_reads_the_trainers_timer():
    class Trainer:
        callbacks = [Timer(duration={"seconds": 100})]

    timer = Trainer.callbacks[0]
    clock = budget_clock(Trainer())
    assert clock() == 0.0  # not started
    timer._start_time[RunningStage.TRAINING] = time.monotonic() - 40.0
    assert clock() == pytest.approx(0.4, abs=0.02)
    timer._start_time[RunningStage.TRAINING] = time.monotonic() - 400.0
    assert clock() == 1.0

    class Unlimited:
        callbacks = [Timer(duration=None)]

    assert budget_clock(Unlimited()) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(optimizer="sgd"), "optim.optimizer='sgd' is unknown"),
        (dict(scheduler="step"), "optim.scheduler='step' is unknown"),
        (dict(warmup_fraction=1.0), "warmup_fraction"),
        (dict(min_lr_ratio=2.0), "min_lr_ratio"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(betas=(0.9,)), "betas"),
    ],
)
def test_impossible_settings_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], 1e-3, 10, **kwargs)


def test_adam_and_adamw_differ_only_in_decoupled_weight_decay():
    steps = {}
    for name in ("adam", "adamw"):
        weight = torch.nn.Parameter(torch.ones(3))
        built = build_optimizer([weight], 0.1, 10, optimizer=name, weight_decay=0.5, warmup_fraction=0.0)
        weight.grad = torch.zeros(3)
        built["optimizer"].step()
        steps[name] = weight.detach().clone()
    # Zero gradient: AdamW shrinks the weight by lr * wd; Adam's L2 gradient is normalised into a full step.
    torch.testing.assert_close(steps["adamw"], torch.full((3,), 1 - 0.1 * 0.5))
    torch.testing.assert_close(steps["adam"], torch.full((3,), 1 - 0.1), atol=1e-6, rtol=0)
