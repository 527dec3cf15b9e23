"""The sweep summary: rollout comparison (curves in horizon order, one per model, persistence beside), default
columns, and jobs that ended without results.json."""

from __future__ import annotations

import csv
import json

from upt_lightning.sweep import default_metrics, main, rollout_curve, write_rollout_comparison


def _job(name: str, model: str | None, curve: list[float]) -> dict:
    metrics = {f"test/rollout_nrmse_h{k}": v for k, v in enumerate(curve, start=1)}
    metrics.update({f"test/persistence_rollout_nrmse_h{k}": 0.1 * k for k in range(1, len(curve) + 1)})
    metrics["test/rollout_nrmse_last"] = curve[-1]
    job = {"job": name, "metrics": metrics, "phase_times_s": {"stage1": 10.0, "stage2": 5.0}}
    if model is not None:
        job["model"] = model
    return job


def test_rollout_curve_stops_at_the_first_missing_horizon():
    metrics = {"test/rollout_nrmse_h2": 0.2, "test/rollout_nrmse_h1": 0.1, "test/rollout_nrmse_h4": 0.4}
    assert rollout_curve(metrics) == [0.1, 0.2]
    assert rollout_curve({"test/nrmse": 0.1}) is None


def test_comparison_plot_only_when_the_jobs_trained_different_models(tmp_path):
    same = [_job("0", None, [0.1, 0.2]), _job("1", "upt", [0.1, 0.3])]
    assert write_rollout_comparison(same, tmp_path / "a.png") is None
    assert not (tmp_path / "a.png").exists()
    mixed = [_job("0", None, [0.1, 0.2]), _job("1", "fno", [0.05, 0.3])]
    path = write_rollout_comparison(mixed, tmp_path / "b.png")
    assert path == tmp_path / "b.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_columns_put_the_validation_objective_beside_its_test_figures():
    job = _job("0", "upt", [0.1, 0.2])
    job["metrics"].update({"val/rollout_nrmse_h2": 0.25, "test/nrmse": 0.05})
    job["objective_metric"] = "val/rollout_nrmse_h2"
    assert default_metrics([job]) == ("val/rollout_nrmse_h2", "test/rollout_nrmse_h2",
                                      "test/persistence_rollout_nrmse_h2", "test/nrmse")
    # Results of runs before the objective moved to validation keep their test objective.
    job["objective_metric"] = "test/rollout_nrmse_h2"
    assert default_metrics([job]) == ("test/rollout_nrmse_h2", "test/persistence_rollout_nrmse_h2", "test/nrmse")


def test_a_job_without_results_is_listed_as_failed_with_its_overrides_and_the_exit_status_is_1(tmp_path, capsys):
    finished = tmp_path / "0"
    finished.mkdir()
    (finished / "results.json").write_text(json.dumps({**_job("0", "upt", [0.1, 0.2]), "overrides": ["seed=1"]}))
    interrupted = tmp_path / "1" / ".hydra"  # Hydra writes .hydra/ before the job starts
    interrupted.mkdir(parents=True)
    (interrupted / "overrides.yaml").write_text("- seed=2\n- loss.lambda_inv_enc=0.1\n")
    assert main([str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert f"failed: job 1 ({tmp_path / '1'}): seed=2 loss.lambda_inv_enc=0.1" in out
    assert "1 of 2 jobs failed" in err
    header, *rows = (tmp_path / "sweep_summary.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["0"]  # the table and CSV hold the finished job


def test_seeds_are_summarised_as_mean_and_spread_and_only_gaps_beyond_both_spreads_count(tmp_path, capsys):
    figures = {  # (model, seed): (one step, h10)
        ("upt", 0): (0.0030, 0.020), ("upt", 1): (0.0032, 0.024), ("upt", 2): (0.0034, 0.022),
        ("fno", 0): (0.0018, 0.021), ("fno", 1): (0.0019, 0.025), ("fno", 2): (0.0020, 0.023),
    }
    for job, ((model, seed), (one_step, h10)) in enumerate(figures.items()):
        (tmp_path / str(job)).mkdir()
        results = {"model": model, "overrides": [f"+experiment=burgers_{model}", f"seed={seed}"],
                   "objective_metric": "val/rollout_nrmse_h10",
                   "metrics": {"test/nrmse": one_step, "test/rollout_nrmse_h10": h10, "val/rollout_nrmse_h10": h10}}
        (tmp_path / str(job) / "results.json").write_text(json.dumps(results))
    assert main([str(tmp_path)]) == 0
    with open(tmp_path / "seeds_summary.csv") as handle:
        header, upt, fno, difference = list(csv.reader(handle))
    assert header[:4] == ["group", "seeds", "test/nrmse", "test/rollout_nrmse_h10"]
    assert upt[:4] == ["upt +experiment=burgers_upt", "0,1,2", "0.0032 ± 0.0002", "0.022 ± 0.002"]
    assert fno[:4] == ["fno +experiment=burgers_fno", "0,1,2", "0.0019 ± 0.0001", "0.023 ± 0.002"]
    # one step: a gap of 0.0013, beyond both spreads; h10: 0.001, within them
    assert difference[2:4] == ["fno +experiment=burgers_fno lower (0.59x)", "within spread"]
