"""Summarise a Hydra multirun: `python -m upt_lightning.sweep multirun/DATE/TIME`.

Reads every job's results.json, prints a table of overrides and final metrics, writes
sweep_summary.csv and, when two numeric overrides vary (for example loss.lambda_inv_enc and
loss.lambda_inv_dec), a heatmap PNG of the objective over them. When the jobs trained different
models (UPT and the FNO baseline) a model column names each job's; the train_s column gives the
seconds each job spent training (stage 1 and stage 2; a cached stage 1 counts as the moment it
took to load it).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table



def default_metrics(jobs: list[dict]) -> tuple[str, ...]:
    """The jobs' objective (e.g. val/rollout_nrmse_h10), the same metric on the test split with its
    persistence baseline, and the test one-step nRMSE: chosen on validation, reported on test."""
    objective = jobs[0].get("objective_metric") or "val/rollout_nrmse_h10"
    split, _, name = objective.partition("/")
    reported = f"test/{name}" if split in ("val", "test") else objective
    baseline = f"test/persistence_{name}" if split in ("val", "test") else None
    present = {key for job in jobs for key in job["metrics"]}
    names = [objective, reported, baseline, "test/nrmse"]
    return tuple(dict.fromkeys(m for m in names if m is not None and (m == objective or m in present)))


def load_jobs(sweep_dir: Path) -> list[dict]:
    """[{"job": name, "overrides": {key: value}, "metrics": {...}, ...}] sorted by job directory."""
    jobs = []
    for path in sorted(sweep_dir.glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        results = json.loads(path.read_text())
        overrides = dict(item.split("=", 1) for item in results.get("overrides", []) if "=" in item)
        jobs.append({**results, "job": path.parent.name, "overrides": overrides})
    if not jobs:
        raise FileNotFoundError(f"no */results.json under {sweep_dir}: is it a multirun directory of train.py?")
    return jobs


def varying_keys(jobs: list[dict]) -> list[str]:
    keys = sorted({k for job in jobs for k in job["overrides"]})
    return [k for k in keys if len({job["overrides"].get(k) for job in jobs}) > 1]


def _model(job: dict) -> str:
    return job.get("model") or "upt"  # results.json of runs before the FNO baseline name no model


def _train_seconds(job: dict) -> str:
    phases = job.get("phase_times_s") or {}
    if "stage2" not in phases:
        return ""
    return f"{phases.get('stage1', 0.0) + phases['stage2']:.0f}"


def summary_rows(jobs: list[dict], metrics: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    keys = varying_keys(jobs)
    columns = [("model", _model)] if len({_model(job) for job in jobs}) > 1 else []
    columns.append(("train_s", _train_seconds))
    header = ["job", *keys, *(name for name, _ in columns), *metrics]
    rows = []
    for job in jobs:
        values = [job["metrics"].get(m) for m in metrics]
        rows.append([job["job"], *(job["overrides"].get(k, "") for k in keys), *(cell(job) for _, cell in columns),
                     *("" if v is None else f"{v:.4g}" for v in values)])
    return header, rows


def write_heatmap(jobs: list[dict], x_key: str, y_key: str, metric: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted({float(job["overrides"][x_key]) for job in jobs})
    ys = sorted({float(job["overrides"][y_key]) for job in jobs})
    grid = [[float("nan")] * len(xs) for _ in ys]
    for job in jobs:
        value = job["metrics"].get(metric)
        if value is not None:
            grid[ys.index(float(job["overrides"][y_key]))][xs.index(float(job["overrides"][x_key]))] = value
    fig, ax = plt.subplots(figsize=(1.6 * len(xs) + 2, 1.2 * len(ys) + 1.5))
    image = ax.imshow(grid, cmap="viridis_r", origin="lower", aspect="auto")
    ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
    ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.3g}", ha="center", va="center", color="w", fontsize=9)
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_title(metric)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def rollout_curve(metrics: dict, prefix: str = "test/rollout_nrmse_h") -> list[float] | None:
    """``metrics[prefix + "1"], metrics[prefix + "2"], ...`` up to the first missing horizon; None if none."""
    curve = []
    while f"{prefix}{len(curve) + 1}" in metrics:
        curve.append(metrics[f"{prefix}{len(curve) + 1}"])
    return curve or None


def write_rollout_comparison(jobs: list[dict], path: Path) -> Path | None:
    """One rollout curve per job that trained another model (UPT against the FNO baseline), beside
    persistence; None when the jobs trained one model only or logged no rollout."""
    if len({_model(job) for job in jobs}) < 2:
        return None
    curves = {}
    for job in jobs:
        curve = rollout_curve(job["metrics"])
        if curve is not None:
            curves[f"{_model(job).upper()} (job {job['job']}, {_train_seconds(job) or '?'} s)"] = curve
    baseline = next((rollout_curve(job["metrics"], "test/persistence_rollout_nrmse_h") for job in jobs), None)
    if len(curves) < 2 or baseline is None:
        return None
    from upt_lightning.plots import plot_rollout_comparison

    return plot_rollout_comparison(curves, baseline, path, title="Test rollout error at equal training time")


def summarise(sweep_dir: Path, metrics: tuple[str, ...] | None = None, objective: str | None = None) -> dict:
    jobs = load_jobs(sweep_dir)
    metrics = metrics or default_metrics(jobs)
    header, rows = summary_rows(jobs, metrics)
    table = Table(title=f"sweep {sweep_dir} ({len(jobs)} jobs)")
    for name in header:
        table.add_column(name, justify="left" if name == "job" else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=max(100, 26 * len(header))).print(table)
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    out = {"jobs": len(jobs), "csv": sweep_dir / "sweep_summary.csv"}
    numeric = [k for k in varying_keys(jobs) if all(_is_number(job["overrides"].get(k)) for job in jobs)]
    if len(numeric) == 2:
        metric = objective or metrics[0]
        out["heatmap"] = write_heatmap(jobs, numeric[0], numeric[1], metric, sweep_dir / "sweep_heatmap.png")
        print(f"heatmap: {out['heatmap']}")
    comparison = write_rollout_comparison(jobs, sweep_dir / "rollout_comparison.png")
    if comparison is not None:
        out["rollout_comparison"] = comparison
        print(f"rollout curves: {comparison}")
    return out


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m upt_lightning.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (multirun/DATE/TIME)")
    parser.add_argument("--metric", action="append", help="metric to tabulate (repeatable)")
    parser.add_argument("--objective", help="metric of the heatmap (default: the first metric)")
    args = parser.parse_args(argv)
    try:
        summarise(args.sweep_dir, tuple(args.metric) if args.metric else None, args.objective)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
