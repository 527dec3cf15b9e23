"""train.py end to end: Hydra composition of every experiment, real subprocess runs, sweeps, bad configs."""

import json

import pytest
import torch

from helpers.entry import REPO, compose_train, run_train, tiny_overrides
from upt_lightning.errors import ConfigError
from upt_lightning.pipeline import run_experiment

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def test_the_three_documented_experiments_exist():
    assert {"burgers_upt", "burgers1d_upt", "burgers_mesh_upt"} <= set(EXPERIMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_runs_fast_dev_run(experiment, tmp_path):
    cfg = compose_train([*tiny_overrides(experiment, tmp_path / "data"), "+trainer.fast_dev_run=true",
                         "evaluate.plots=false", f"+run_dir={tmp_path / 'run'}"])
    results = run_experiment(cfg)
    metrics = results["metrics"]
    assert metrics["test/nrmse"] > 0 and metrics["test/persistence_nrmse"] > 0
    assert "test/rollout_nrmse_h3" in metrics
    assert (tmp_path / "run" / "results.json").is_file()
    # The objective a sweep minimises is the validation metric of the best checkpoint, not a test metric.
    assert results["objective_metric"] == "val/rollout_nrmse_h3"
    assert results["objective"] == metrics["val/rollout_nrmse_h3"] > 0


def test_latent_refinement_runs_through_the_latent_cache_validation_and_test(tmp_path):
    cfg = compose_train([*tiny_overrides("burgers_upt", tmp_path / "data"), "+trainer.fast_dev_run=true",
                         "evaluate.plots=false", "evaluate.superres=false", f"+run_dir={tmp_path / 'run'}",
                         "stage2.latent_refinement={steps: 2, points: 16}"])
    assert cfg.stage2.latent_cache  # the refined latents are cached, then evaluation refines under inference mode
    results = run_experiment(cfg)
    assert results["metrics"]["test/nrmse"] > 0 and results["metrics"]["test/rollout_nrmse_h3"] > 0
    hparams = torch.load(results["operator_ckpt"], weights_only=True)["hyper_parameters"]
    assert hparams["latent_refinement"] == {"steps": 2, "lr": 2e-3, "points": 16, "rate": "fixed"}


@pytest.mark.slow
def test_train_py_default_experiment_writes_the_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    args = [*tiny_overrides("burgers_upt", tmp_path / "data"), f"hydra.run.dir={run_dir}", "data.rollout_starts=[0,2]"]
    done = run_train(args)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("config.yaml", "results.json", "rollout_nrmse.png", "rollout_snapshots.png", "conservation.png",
                 "stage1/metrics.csv", "stage2/metrics.csv", "stage2/checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), f"{name} missing from the run directory"
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("test/nrmse", "test/persistence_nrmse", "test/rollout_nrmse_h3", "superres/rollout_nrmse_h3"):
        assert results["metrics"][key] > 0, key
    # Two rollout starts: each reported apart, the plain figure their mean (one window per trajectory and start).
    for name in ("rollout", "persistence_rollout"):
        per_start = [results["metrics"][f"test/start{t0}/{name}_nrmse_h3"] for t0 in (0, 2)]
        assert results["metrics"][f"test/{name}_nrmse_h3"] == pytest.approx(sum(per_start) / 2, rel=1e-5)
    assert per_start[0] != per_start[1]
    # burgers2d declares its conserved mean velocity and dissipated energy: their drift per horizon is logged.
    for name in ("mean_u", "mean_v", "energy"):
        assert all(results["metrics"][f"test/conservation/{name}_h{k}"] >= 0 for k in (1, 2, 3)), name
    assert "persistence" in done.stdout and "rollout nRMSE" in done.stdout  # the summary table
    # Lightning's lines come once, through Hydra's handlers (console and train.log), without its advertisements.
    assert "GPU available" in done.stdout and "GPU available" in (run_dir / "train.log").read_text()
    assert "GPU available" not in done.stderr and "Tip:" not in done.stdout + done.stderr
    phases = results["phase_times_s"]
    assert set(phases) == {"data_and_checks", "stage1", "stage2", "validate", "test", "plots"}
    for stage in ("stage1", "stage2"):  # 3 batches of 4 windows per stage, on the CPU (no accelerator memory)
        throughput = results["throughput"][stage]
        assert throughput["samples"] == 12 and throughput["max_memory_allocated_mb"] is None
        assert throughput["samples_per_s"] == pytest.approx(12 / throughput["train_s"], rel=1e-2)
        assert 0 < throughput["train_s"] < phases[stage]
    assert 0 < sum(phases.values()) <= results["wall_time_s"] + 0.5

    # The same stage-1 configuration again: the cached autoencoder is reused, and the log says so.
    again = run_train([*args[:-1], f"hydra.run.dir={tmp_path / 'run2'}"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing the cached autoencoder" in (tmp_path / "run2" / "train.log").read_text()
    assert not (tmp_path / "run2" / "stage1").exists()


@pytest.mark.slow
def test_multirun_over_the_two_lambdas_and_sweep_summary(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = run_train(["-m", *tiny_overrides("burgers_upt", tmp_path / "data"), "evaluate.plots=false",
                      "evaluate.superres=false", "loss.lambda_inv_enc=0,0.01", "loss.lambda_inv_dec=0,0.01",
                      f"hydra.sweep.dir={sweep_dir}"], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = sorted(sweep_dir.glob("*/results.json"))
    assert len(results) == 4
    combos = {tuple(sorted(o for o in json.loads(p.read_text())["overrides"] if "lambda_inv" in o))
              for p in results}
    assert len(combos) == 4
    logs = "".join(p.read_text() for p in sweep_dir.glob("*/train.log"))
    assert logs.count("reusing the cached autoencoder") == 3  # stage 1 trained once for 4 jobs

    import subprocess
    import sys

    summary = subprocess.run([sys.executable, "-m", "upt_lightning.sweep", str(sweep_dir)], capture_output=True,
                             text=True, cwd=REPO)
    assert summary.returncode == 0, summary.stderr
    assert "loss.lambda_inv_enc" in summary.stdout and "loss.lambda_inv_dec" in summary.stdout
    assert (sweep_dir / "sweep_heatmap.png").stat().st_size > 1000
    assert len((sweep_dir / "sweep_summary.csv").read_text().strip().splitlines()) == 5


@pytest.mark.slow
def test_train_py_with_the_latent_cache_trains_stage2_without_reading_fields(tmp_path):
    run_dir = tmp_path / "run"
    done = run_train([*tiny_overrides("burgers_upt", tmp_path / "data"), "stage2.latent_cache=true",
                      "loss.use_inverse_losses=false", "evaluate.plots=false", "evaluate.superres=false",
                      f"hydra.run.dir={run_dir}"])
    assert done.returncode == 0, done.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "latent cache:" in log and "without fields" in log
    results = json.loads((run_dir / "results.json").read_text())
    assert results["metrics"]["test/nrmse"] > 0 and results["metrics"]["test/rollout_nrmse_h3"] > 0


def test_latent_cache_with_a_trainable_encoder_fails_before_training(tmp_path):
    cfg = compose_train([*tiny_overrides("burgers_upt", tmp_path / "data"), "stage2.latent_cache=true",
                         "freeze_autoencoder=false", f"+run_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"stage2\.latent_cache=true needs freeze_autoencoder=true"):
        run_experiment(cfg)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "override, key",
    [
        ("sampling.strategy=bogus", "sampling.strategy"),
        ("loss.lambda_inv_enc=-1", "loss.lambda_inv_enc"),
        ("sampling.num_queries=0", "sampling.num_queries"),
        ("model.grid_encoder.patch_size=5", "model.grid_encoder.patch_size"),
        ("stage2.max_epochs=0", "stage2.max_epochs"),
        ("loss.inverse_loss_frequency=0", "loss.inverse_loss_frequency"),
        ("evaluate.plot_horizons=[1,99]", "evaluate.plot_horizons"),
        ("optim.scheduler=bogus", "optim.scheduler"),
        ("optim.warmup_fraction=1.5", "optim.warmup_fraction"),
        ("+optim.momentum=0.9", "optim.momentum"),
        ("+model.grid_encoder.pooling=bogus", "model.grid_encoder.pooling"),
        ("+model.grid_encoder.pooling=patch", "model.latent_tokens"),
        ("objective=test/rollout_nrmse_h3", "objective"),
        ("objective=val/rollout_nrmse_h10", "data.rollout_horizon"),
        ("loss.lambda_inv_enc=0.1", "loss.inverse_loss_max_weight"),
        ("model.compile=yes", "model.compile"),
        ("data.conservation.energy.fields=[u,p]", "data.conservation"),
        ("loss.lambda_conservation=0.1", "loss.inverse_loss_max_weight"),
        ("data.conservation=null loss.lambda_conservation=0.01", "data.conservation"),
    ],
)
def test_impossible_settings_fail_before_training_naming_the_key(override, key, tmp_path):
    cfg = compose_train([*tiny_overrides("burgers_upt", tmp_path / "data"), *override.split(),
                         f"+run_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_experiment(cfg)
    assert not (tmp_path / "run" / "stage1").exists()


def test_train_py_prints_a_config_error_without_traceback(tmp_path):
    done = run_train([*tiny_overrides("burgers_upt", tmp_path / "data"), "sampling.strategy=bogus",
                      f"hydra.run.dir={tmp_path / 'run'}"], timeout=120)
    assert done.returncode == 2
    assert "sampling.strategy" in done.stderr and "uniform" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # failed before generating anything
