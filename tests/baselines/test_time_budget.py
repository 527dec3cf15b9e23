"""Equal-time comparisons: time_budget and stageN.trainer.max_time reach the stage Trainers, and training stops."""

from __future__ import annotations

import importlib.util
from datetime import timedelta

import pytest

from helpers.entry import compose_train, tiny_overrides
from upt_lightning.errors import ConfigError
from upt_lightning.runtime.checkpoints import read_checkpoint
from upt_lightning.pipeline import run_experiment
from upt_lightning.pipeline.resume import config_differences
from upt_lightning.pipeline.time_budget import stage_max_time
from upt_lightning.pipeline.trainers import make_trainer

needs_neuralop = pytest.mark.skipif(importlib.util.find_spec("neuralop") is None,
                                    reason='the FNO baseline needs neuraloperator: pip install -e ".[baselines]"')


def _limits(overrides: list[str]) -> tuple:
    cfg = compose_train(overrides)
    return tuple(stage_max_time(cfg, stage) for stage in ("stage1", "stage2"))


@pytest.mark.parametrize("overrides, expected", [
    ([], (None, None)),
    # burgers_upt gives stage 1 half of a budget (stage1.budget_share), as its epochs take.
    (["time_budget=600"], (timedelta(seconds=300), timedelta(seconds=300))),
    (["time_budget=00:00:10:00", "stage1.budget_share=0.25"], (timedelta(seconds=150), timedelta(seconds=450))),
    (["time_budget={minutes:10}", "stage2.trainer.max_time=00:00:01:00"], (timedelta(seconds=300), timedelta(minutes=1))),
    (["stage1.trainer.max_time={seconds:30}"], (timedelta(seconds=30), None)),
])
def test_upt_splits_the_budget_between_its_stages_and_a_stage_limit_wins(overrides, expected):
    assert _limits(["+experiment=burgers_upt", *overrides]) == expected


def test_the_fno_has_no_stage_1_and_gets_the_whole_budget():
    assert _limits(["+experiment=burgers_fno", "time_budget=90.5"]) == (None, timedelta(seconds=90.5))
    assert _limits(["+experiment=burgers_fno", "time_budget=null"]) == (None, None)


def test_the_stage_trainer_gets_the_limit_as_max_time(tmp_path):
    cfg = compose_train(["+experiment=burgers_upt", "time_budget=600", "stage1.budget_share=0.2",
                         "trainer.accelerator=cpu", "~logger"])
    for stage, seconds in (("stage1", 120), ("stage2", 480)):
        trainer = make_trainer(cfg, stage, tmp_path / stage, [])
        timers = [c for c in trainer.callbacks if type(c).__name__ == "Timer"]
        assert len(timers) == 1 and timers[0].time_remaining() == pytest.approx(seconds)
    unlimited = make_trainer(compose_train(["+experiment=burgers_upt", "trainer.accelerator=cpu", "~logger"]),
                             "stage2", tmp_path / "free", [])
    assert not [c for c in unlimited.callbacks if type(c).__name__ == "Timer"]


@pytest.mark.parametrize("overrides, key", [
    (["time_budget=-5"], "time_budget"),
    (["stage1.budget_share=1.0", "time_budget=60"], "stage1.budget_share"),
    (["stage2.trainer.max_time=4min"], "stage2.trainer.max_time"),
    (["time_budget={fortnights:1}"], "time_budget"),
])
def test_malformed_limits_stop_before_anything_naming_the_key(overrides, key, tmp_path):
    cfg = compose_train([*tiny_overrides("burgers_upt", tmp_path / "data"), *overrides, f"+run_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_experiment(cfg)
    assert not (tmp_path / "data").exists()


def _trained_epochs(run_dir, stage: str) -> int:
    return int(read_checkpoint(run_dir / stage / "checkpoints" / "last.ckpt")["epoch"])


@pytest.mark.parametrize("experiment", ["burgers_upt", pytest.param("burgers_fno", marks=needs_neuralop)])
def test_every_training_stage_stops_at_its_time_limit(experiment, tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_train([*tiny_overrides(experiment, tmp_path / "data"), "time_budget=4", "evaluate.test=false",
                         "stage1.max_epochs=100000", "stage2.max_epochs=100000", f"+run_dir={run_dir}",
                         "trainer.log_every_n_steps=1"])  # an epoch has 3 batches
    results = run_experiment(cfg)
    stages = ["stage1", "stage2"] if experiment == "burgers_upt" else ["stage2"]
    for stage in stages:
        assert 0 < _trained_epochs(run_dir, stage) < 1000, stage  # stopped by the clock, long before max_epochs
        # Past its limit a stage finishes the batch, validates and checkpoints once more: seconds, not minutes.
        assert results["phase_times_s"][stage] < 60, results["phase_times_s"]


def test_a_run_saved_before_the_time_settings_existed_still_resumes():
    saved = {"seed": 0, "stage1": {"max_epochs": 3, "trainer": {}}, "stage2": {"trainer": {"limit_val_batches": 8}}}
    current = {"seed": 0, "time_budget": None,
               "stage1": {"max_epochs": 3, "budget_share": None, "trainer": {"max_time": None}},
               "stage2": {"trainer": {"limit_val_batches": 8, "max_time": None}}}
    assert config_differences(saved, current) == []
    current["time_budget"] = 60
    assert config_differences(saved, current) == ["time_budget: '<absent>' -> 60"]
