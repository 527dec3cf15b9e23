"""Mean and spread over model seeds of a multirun, and which differences exceed the spread.

    python train.py -m +experiment=burgers_upt,burgers_fno seed=0,1,2
    python -m upt_lightning.sweep multirun/DATE/TIME

The jobs are grouped by everything that varies except ``seed`` (and by model); each group gets the mean
and the standard deviation (ddof 1) of every metric over its seeds. With two groups, a metric's
difference counts as a win only where it exceeds both groups' standard deviations; otherwise the
table says "within spread".
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

SEED_KEY = "seed"
# What the comparison tables report: one step and the rollout horizons, on the test split.
REPORTED = ("test/nrmse", "test/rollout_nrmse_h1", "test/rollout_nrmse_h5", "test/rollout_nrmse_h10")


def seed_groups(jobs: list[dict], keys: Sequence[str], model: Callable[[dict], str]) -> dict[str, list[dict]]:
    """{group label: its jobs}; a label names the model and the varying ``keys`` other than the seed."""
    groups: dict[str, list[dict]] = {}
    for job in jobs:
        parts = [model(job), *(f"{k}={job['overrides'].get(k, '')}" for k in keys if k != SEED_KEY)]
        groups.setdefault(" ".join(parts), []).append(job)
    return groups


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard deviation with ddof 1; 0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def verdict(a: tuple[float, float], b: tuple[float, float], names: tuple[str, str]) -> str:
    """Which of two (mean, spread) pairs is lower (errors: lower is better), if the gap exceeds both spreads."""
    gap = abs(a[0] - b[0])
    if gap <= a[1] or gap <= b[1]:
        return "within spread"
    return f"{names[0] if a[0] < b[0] else names[1]} lower ({min(a[0], b[0]) / max(a[0], b[0]):.2f}x)"


def seed_table(groups: dict[str, list[dict]], metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per group ("mean ± spread (n)" per metric), and with two groups a verdict
    row."""
    present = [m for m in metrics if all(m in job["metrics"] for jobs in groups.values() for job in jobs)]
    header = ["group", "seeds", *present]
    stats = {name: {m: mean_and_spread([job["metrics"][m] for job in jobs]) for m in present}
             for name, jobs in groups.items()}
    rows = [[name, ",".join(str(job["overrides"].get(SEED_KEY, "")) for job in jobs),
             *(f"{stats[name][m][0]:.4g} ± {stats[name][m][1]:.2g}" for m in present)]
            for name, jobs in groups.items()]
    if len(groups) == 2:
        first, second = groups
        rows.append(["difference", "", *(verdict(stats[first][m], stats[second][m], (first, second))
                                          for m in present)])
    return header, rows
