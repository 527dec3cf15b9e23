"""`python train.py +experiment=burgers_fno`: composition, a real run, the UPT/FNO multirun and its table,
and the errors that stop it before training (missing extra, mesh data, too many modes)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import timedelta

import pytest
from omegaconf import OmegaConf

from helpers.entry import REPO, compose_train, run_train, tiny_overrides
from upt_lightning.errors import ConfigError
from upt_lightning.runtime.checkpoints import checkpoint_kind, read_checkpoint
from upt_lightning.pipeline import run_experiment
from upt_lightning.pipeline.time_budget import stage_max_time

needs_neuralop = pytest.mark.skipif(importlib.util.find_spec("neuralop") is None,
                                    reason='the FNO baseline needs neuraloperator: pip install -e ".[baselines]"')
INSTALL = 'pip install -e ".[baselines]"'


def test_burgers_fno_composes_on_the_data_of_burgers_upt():
    fno, upt = compose_train(["+experiment=burgers_fno"]), compose_train(["+experiment=burgers_upt"])
    assert fno.model.kind == "fno" and fno.model.n_modes == 16 and fno.model.hidden_channels == 32
    data = lambda cfg: OmegaConf.to_container(cfg.data, resolve=True)  # noqa: E731
    # The same file, split, windows, normalisation and window weighting (the first frames drawn more often).
    assert data(upt) == data(fno) and data(fno)["frame_weight_power"] == 0.5
    assert stage_max_time(fno, "stage2") == timedelta(seconds=403) and stage_max_time(fno, "stage1") is None


def test_ns2d_fno_composes_on_the_data_of_ns2d_upt_with_its_own_tuned_rate_and_budget():
    fno, upt = compose_train(["+experiment=ns2d_fno"]), compose_train(["+experiment=ns2d_upt"])
    burgers = compose_train(["+experiment=burgers_fno"])
    assert fno.model == burgers.model  # the same FNO; only the data, budget and rate differ
    data = lambda cfg: OmegaConf.to_container(cfg.data, resolve=True)  # noqa: E731
    assert data(upt) == data(fno) and data(fno)["generate"] == "ns2d" and data(fno)["frame_weight_power"] == 0.5
    assert fno.stage2.lr == 2e-2 and burgers.stage2.lr == 1e-2
    assert stage_max_time(fno, "stage2") == timedelta(seconds=311)


@pytest.mark.slow
@needs_neuralop
def test_train_py_runs_the_fno_baseline_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    done = run_train([*tiny_overrides("burgers_fno", tmp_path / "data"), f"hydra.run.dir={run_dir}"])
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("config.yaml", "results.json", "rollout_nrmse.png", "rollout_snapshots.png", "stage2/metrics.csv",
                 "stage2/checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), f"{name} missing from the run directory"
    assert not (run_dir / "stage1").exists() and not list((tmp_path / "data").glob("stage1_cache/*/autoencoder.ckpt"))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["model"] == "fno" and results["autoencoder_ckpt"] is None
    for key in ("test/nrmse", "test/persistence_nrmse", "test/rollout_nrmse_h3", "test/persistence_rollout_nrmse_h3",
                "superres/rollout_nrmse_h3"):
        assert results["metrics"][key] > 0, key
    assert set(results["phase_times_s"]) == {"data_and_checks", "stage2", "validate", "test", "plots"}
    assert checkpoint_kind(read_checkpoint(results["operator_ckpt"])) == "fno"  # readable with weights_only=True
    assert "FNO" in done.stdout and "persistence" in done.stdout and "rollout nRMSE" in done.stdout


@pytest.mark.slow
@needs_neuralop
def test_one_multirun_trains_upt_and_the_fno_and_the_sweep_table_puts_them_side_by_side(tmp_path):
    sweep_dir = tmp_path / "sweep"
    # The tiny settings of both, minus model sizes: in one multirun every override reaches both jobs.
    # The UPT job then runs model=small, whose one token per 8x8 patch needs the grid of the experiment (64x64).
    tiny = [item.replace("resolution=16", "resolution=64")
            for item in tiny_overrides("burgers_upt", tmp_path / "data")[1:] if item != "model=tiny"]
    done = run_train(["-m", "+experiment=burgers_upt,burgers_fno", *tiny, "evaluate.plots=false",
                      "evaluate.superres=false", "time_budget=00:00:02:00", f"hydra.sweep.dir={sweep_dir}"], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = [json.loads(path.read_text()) for path in sorted(sweep_dir.glob("*/results.json"))]
    assert [job["model"] for job in jobs] == ["upt", "fno"]
    assert all(job["metrics"]["test/rollout_nrmse_h3"] > 0 for job in jobs)
    summary = subprocess.run([sys.executable, "-m", "upt_lightning.sweep", str(sweep_dir)], capture_output=True,
                             text=True, cwd=REPO)
    assert summary.returncode == 0, summary.stderr
    header, *rows = (sweep_dir / "sweep_summary.csv").read_text().strip().splitlines()
    assert header.startswith("job,+experiment,model,train_s,val/rollout_nrmse_h3,test/rollout_nrmse_h3")
    assert [row.split(",")[1:3] for row in rows] == [["burgers_upt", "upt"], ["burgers_fno", "fno"]]
    assert (sweep_dir / "rollout_comparison.png").stat().st_size > 0 and "rollout curves:" in summary.stdout


def test_without_neuraloperator_the_run_stops_before_anything_with_the_install_command(tmp_path, monkeypatch):
    for name in ("neuralop", "neuralop.models"):
        monkeypatch.setitem(sys.modules, name, None)  # what `import neuralop` meets when it is not installed
    cfg = compose_train([*tiny_overrides("burgers_fno", tmp_path / "data"), f"+run_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"neuraloperator.*" + INSTALL.replace(".", r"\.").replace("[", r"\[")):
        run_experiment(cfg)
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def test_train_py_without_neuraloperator_prints_the_install_command_without_traceback(tmp_path):
    args = [*tiny_overrides("burgers_fno", tmp_path / "data"), f"hydra.run.dir={tmp_path / 'run'}"]
    script = ("import runpy, sys; sys.modules['neuralop'] = None; "
              f"sys.argv = ['train.py', *{args!r}]; runpy.run_path({str(REPO / 'train.py')!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert INSTALL in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()


def test_the_fno_on_mesh_data_stops_before_generating_it_and_names_the_fix(tmp_path):
    # Checked before neuraloperator is looked for: this message comes with or without the extra.
    cfg = compose_train(["+experiment=burgers_fno", "data=burgers2d_mesh", f"data_dir={tmp_path / 'data'}",
                         f"+run_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"model\.kind=fno \(the FNO baseline\) needs grid data.*"
                                          r"pick grid data \(data=burgers2d.*UPT \(model=small.*the GINO baseline \(model=gino\)"):
        run_experiment(cfg)
    assert not (tmp_path / "data").exists()


@needs_neuralop
@pytest.mark.parametrize("override, message", [
    ("model.n_modes=32", r"model\.n_modes=32 exceeds the 16 points of grid axis 0.*at most 16"),
    ("model.n_modes=[8,8,8]", r"model\.n_modes=\[8, 8, 8\] names 3 axes, but the grid \(16, 16\) has 2"),
    ("model.hidden_channels=0", r"model\.hidden_channels=0 must be a positive integer"),
    ("+model.hiden_channels=4", r"model\.hiden_channels is not a setting of the FNO baseline"),
    ("stage2.latent_cache=true", r"stage2\.latent_cache=true .* set stage2\.latent_cache=false"),
    ("time_budget=soon", r"time_budget='soon' is not a duration"),
])
def test_impossible_fno_settings_stop_before_training_naming_the_key(override, message, tmp_path):
    cfg = compose_train([*tiny_overrides("burgers_fno", tmp_path / "data"), override, f"+run_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=message):
        run_experiment(cfg)
    assert not (tmp_path / "run").exists()
