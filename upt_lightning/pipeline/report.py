"""The run's summary: a rich table on the terminal and results.json in the run directory."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

SUMMARY_ROWS = (
    ("one-step nRMSE", "test/nrmse", "test/persistence_nrmse"),
    ("rollout nRMSE, h=1", "test/rollout_nrmse_h1", "test/persistence_rollout_nrmse_h1"),
    ("rollout nRMSE, h=5", "test/rollout_nrmse_h5", "test/persistence_rollout_nrmse_h5"),
    ("rollout nRMSE, h=10", "test/rollout_nrmse_h10", "test/persistence_rollout_nrmse_h10"),
    ("rollout nRMSE, last", "test/rollout_nrmse_last", "test/persistence_rollout_nrmse_last"),
    ("super-res nRMSE, h=1", "superres/rollout_nrmse_h1", None),
    ("super-res nRMSE, h=10", "superres/rollout_nrmse_h10", None),
)


def summary_table(metrics: dict, title: str, model: str = "UPT") -> Table:
    """Rows of SUMMARY_ROWS present in ``metrics``: the model's value (column ``model``), persistence's, ratio."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column(model, justify="right")
    table.add_column("persistence", justify="right")
    table.add_column("ratio", justify="right")
    datasets = dataset_names(metrics)
    for label, key, baseline_key in SUMMARY_ROWS:
        _add_row(table, metrics, f"{label} (mean of datasets)" if datasets else label, key, baseline_key)
    for name in datasets:
        for label, key, baseline_key in SUMMARY_ROWS[:4]:
            _add_row(table, metrics, f"{name}: {label}", key.replace("test/", f"test/{name}/", 1),
                     baseline_key.replace("test/", f"test/{name}/", 1))
    for prefix in ["test/", *(f"test/{name}/" for name in datasets)]:
        scope = "" if prefix == "test/" else f"{prefix[5:-1]}: "
        for key in sorted(k for k in metrics if k.startswith(f"{prefix}conservation/") and k.endswith("_h10")):
            name = key[len(f"{prefix}conservation/"):-len("_h10")]
            table.add_row(f"{scope}{name} drift, h=10", f"{metrics[key]:.3g}", "", "")
    return table


def dataset_names(metrics: dict) -> list[str]:
    """The datasets of a multi-dataset run's metrics (``test/<dataset>/nrmse``), in sorted order."""
    return sorted(key.split("/")[1] for key in metrics if key.count("/") == 2 and key.startswith("test/")
                  and key.endswith("/nrmse"))


def _add_row(table: Table, metrics: dict, label: str, key: str, baseline_key: str | None) -> None:
    if key not in metrics:
        return
    value = metrics[key]
    baseline = metrics.get(baseline_key) if baseline_key else None
    ratio = f"{value / baseline:.3f}" if baseline else ""
    table.add_row(label, f"{value:.4g}", "" if baseline is None else f"{baseline:.4g}", ratio)


def print_summary(metrics: dict, title: str, model: str = "UPT") -> None:
    Console().print(summary_table(metrics, title, model))


def write_results(run_dir: Path, results: dict) -> Path:
    """results.json: overrides, metrics, checkpoints, wall time (read by `python -m upt_lightning.sweep`)."""
    path = run_dir / "results.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
    return path
