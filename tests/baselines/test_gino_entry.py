"""`python train.py +experiment=burgers_mesh_gino`: composition on burgers_mesh_upt's data, a real run on a mesh,
and the settings it refuses before training."""

from __future__ import annotations

import importlib.util
import json
from datetime import timedelta

import pytest
from omegaconf import OmegaConf

from helpers.entry import compose_train, run_train, tiny_overrides
from upt_lightning.errors import ConfigError
from upt_lightning.pipeline import run_experiment
from upt_lightning.pipeline.time_budget import stage_max_time
from upt_lightning.runtime.checkpoints import checkpoint_kind, read_checkpoint

needs_neuralop = pytest.mark.skipif(importlib.util.find_spec("neuralop") is None,
                                    reason='the GINO baseline needs neuraloperator: pip install -e ".[baselines]"')


def test_burgers_mesh_gino_composes_on_the_data_of_burgers_mesh_upt():
    gino, upt = compose_train(["+experiment=burgers_mesh_gino"]), compose_train(["+experiment=burgers_mesh_upt"])
    assert gino.model.kind == "gino"
    data = lambda cfg: OmegaConf.to_container(cfg.data, resolve=True)  # noqa: E731
    assert data(gino) == data(upt)  # the same file, split, windows and test windows
    assert stage_max_time(gino, "stage2") == timedelta(seconds=gino.time_budget)
    assert stage_max_time(gino, "stage1") is None


@pytest.mark.slow
@needs_neuralop
def test_train_py_runs_the_gino_baseline_on_a_mesh_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    done = run_train([*tiny_overrides("burgers_mesh_gino", tmp_path / "data"), f"hydra.run.dir={run_dir}",
                      "time_budget=null"])
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["model"] == "gino" and results["autoencoder_ckpt"] is None and not (run_dir / "stage1").exists()
    for key in ("test/nrmse", "test/persistence_nrmse", "test/rollout_nrmse_h3", "val/rollout_nrmse_h3"):
        assert results["metrics"][key] > 0, key
    assert checkpoint_kind(read_checkpoint(run_dir / "stage2/checkpoints/last.ckpt")) == "gino"
    # the same command continues the finished run from its checkpoints instead of starting over
    again = run_train([*tiny_overrides("burgers_mesh_gino", tmp_path / "data"), f"hydra.run.dir={run_dir}",
                       "time_budget=null"])
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.parametrize("override, message", [
    ("model.fno_kwargs={}", r"model\.fno_kwargs is not a setting of the GINO baseline"),
    ("stage2.latent_cache=true", r"stage2\.latent_cache=true encodes with UPT's stage-1 encoder"),
])
def test_settings_the_gino_does_not_have_are_refused_before_training(tmp_path, override, message):
    cfg = compose_train(["+experiment=burgers_mesh_gino", f"data_dir={tmp_path / 'data'}",
                         f"+run_dir={tmp_path / 'run'}", "+" + override if override.startswith("model.fno") else override])
    with pytest.raises(ConfigError, match=message):
        run_experiment(cfg)
    assert not (tmp_path / "data").exists()
