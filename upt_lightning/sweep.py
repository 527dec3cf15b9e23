"""Summarise a Hydra multirun: `python -m upt_lightning.sweep multirun/DATE/TIME`.

Reads every job's results.json, prints a table of overrides and final metrics, writes
sweep_summary.csv and, when two numeric overrides vary (for example loss.lambda_inv_enc and
loss.lambda_inv_dec), a heatmap PNG of the objective over them. When the jobs trained different
models (UPT and the FNO baseline) a model column names each job's; the train_s column gives the
seconds each job spent training (stage 1 and stage 2; a cached stage 1 counts as the moment it
took to load it). When ``seed`` varies, a second table gives each group's mean ± standard deviation over
its seeds, and for two groups which differences exceed both spreads (sweep_seeds.py; seeds_summary.csv).

A job directory without results.json (interrupted, killed or crashed; also one still running) is a
failed job: it is listed under the table with its overrides, the table and CSV hold the finished jobs,
and the exit status is 1, so a script running the summary notices. Exit status 2: no job directory at
all. Rerunning a grid sweep with the same ``hydra.sweep.dir`` continues the failed jobs from their
checkpoints.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from upt_lightning.sweep_seeds import REPORTED, SEED_KEY, seed_groups, seed_table


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


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's job directories in job order: those Hydra gave a ``.hydra/`` folder, or that hold
    train.py's results.json or config.yaml."""
    markers = (".hydra", "results.json", "config.yaml")
    dirs = [path for path in sweep_dir.iterdir() if path.is_dir() and any((path / m).exists() for m in markers)]
    return sorted(dirs, key=lambda path: (len(path.name), path.name))


def parse_overrides(items: list[str]) -> dict[str, str]:
    """Hydra's ``["key=value", ...]`` -> ``{key: value}``."""
    return dict(item.split("=", 1) for item in items if "=" in item)


def load_jobs(sweep_dir: Path) -> tuple[list[dict], list[dict]]:
    """(finished, failed) jobs in job order. Finished: results.json with ``"job": name`` and ``"overrides":
    {key: value}``; failed (no results.json): ``{"job", "overrides"}``, from .hydra/overrides.yaml if present."""
    dirs = job_dirs(sweep_dir) if sweep_dir.is_dir() else []
    if not dirs:
        raise FileNotFoundError(f"no job directories under {sweep_dir}: is it a multirun directory of train.py?")
    finished, failed = [], []
    for path in dirs:
        if (path / "results.json").is_file():
            results = json.loads((path / "results.json").read_text())
            finished.append({**results, "job": path.name, "overrides": parse_overrides(results.get("overrides", []))})
        else:
            saved = path / ".hydra" / "overrides.yaml"
            items = OmegaConf.to_container(OmegaConf.load(saved)) if saved.is_file() else []
            failed.append({"job": path.name, "overrides": parse_overrides(items)})
    return finished, failed


def report_failed(failed: list[dict], sweep_dir: Path) -> None:
    """One line per failed job: its name and overrides, and where its log is."""
    print(f"{len(failed)} failed job(s), without results.json (interrupted or crashed; see <job>/train.log):")
    for job in failed:
        overrides = " ".join(f"{key}={value}" for key, value in job["overrides"].items()) or "(no overrides)"
        print(f"  failed: job {job['job']} ({sweep_dir / job['job']}): {overrides}")


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
    """Print and write the summary; returns {"jobs": finished count, "failed": [failed job names], "csv", ...}."""
    jobs, failed = load_jobs(sweep_dir)
    out: dict = {"jobs": len(jobs), "failed": [job["job"] for job in failed]}
    if jobs:
        out.update(summarise_finished(jobs, sweep_dir, metrics, objective, len(failed)))
    if failed:
        report_failed(failed, sweep_dir)
    return out


def summarise_finished(jobs: list[dict], sweep_dir: Path, metrics: tuple[str, ...] | None, objective: str | None,
                       failures: int) -> dict:
    """Table, sweep_summary.csv, heatmap and rollout comparison of the finished ``jobs``."""
    metrics = metrics or default_metrics(jobs)
    header, rows = summary_rows(jobs, metrics)
    failed_note = f", {failures} failed: listed below" if failures else ""
    table = Table(title=f"sweep {sweep_dir} ({len(jobs)} jobs{failed_note})")
    for name in header:
        table.add_column(name, justify="left" if name == "job" else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=max(100, 26 * len(header))).print(table)
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    out = {"csv": sweep_dir / "sweep_summary.csv"}
    numeric = [k for k in varying_keys(jobs) if all(_is_number(job["overrides"].get(k)) for job in jobs)]
    if len(numeric) == 2:
        metric = objective or metrics[0]
        out["heatmap"] = write_heatmap(jobs, numeric[0], numeric[1], metric, sweep_dir / "sweep_heatmap.png")
        print(f"heatmap: {out['heatmap']}")
    if SEED_KEY in varying_keys(jobs):
        out["seeds_csv"] = print_seed_summary(jobs, sweep_dir, metrics)
    comparison = write_rollout_comparison(jobs, sweep_dir / "rollout_comparison.png")
    if comparison is not None:
        out["rollout_comparison"] = comparison
        print(f"rollout curves: {comparison}")
    return out


def print_seed_summary(jobs: list[dict], sweep_dir: Path, metrics: tuple[str, ...]) -> Path:
    """Mean ± spread over the seeds of each group of jobs (sweep_seeds.py); writes seeds_summary.csv."""
    groups = seed_groups(jobs, varying_keys(jobs), _model)
    header, rows = seed_table(groups, (*REPORTED, *(m for m in metrics if m not in REPORTED)))
    table = Table(title=f"mean ± standard deviation over seeds ({len(jobs)} jobs)")
    for name in header:
        table.add_column(name, justify="left" if name in ("group", "seeds") else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=max(100, 24 * len(header))).print(table)
    path = sweep_dir / "seeds_summary.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


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
        out = summarise(args.sweep_dir, tuple(args.metric) if args.metric else None, args.objective)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if out["failed"]:
        total = out["jobs"] + len(out["failed"])
        print(f"error: {len(out['failed'])} of {total} jobs failed (listed above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
