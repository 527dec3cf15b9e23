"""Figures of benchmark results (matplotlib, written without a display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from upt_lightning.bench.report import BenchResult  # noqa: E402

SERIES_TIME = (("step_s", "training step"), ("inv_enc_s", "L_inv_enc alone"), ("inv_dec_s", "L_inv_dec alone"))
SERIES_MEMORY = (("step_saved_mb", "step, saved for backward"), ("decoder_saved_mb", "L_inv_enc, saved"),
                 ("rss_increase_mb", "step, RSS rise"))
STYLES = {"uniform": "-", "stratified": "--"}


def plot_queries(result: BenchResult, path: Path) -> Path:
    """Time (left) and memory (right) against the number of queries Q; the dense step sits at Q = N."""
    dense = next(row for row in result.rows if row["strategy"] == "dense")
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, series, label in ((left, SERIES_TIME, "seconds (median)"), (right, SERIES_MEMORY, "MB")):
        for index, (key, name) in enumerate(series):
            color = f"C{index}"
            for strategy, style in STYLES.items():
                rows = sorted((r for r in result.rows if r["strategy"] == strategy), key=lambda r: r["num_queries"])
                queries = [r["num_queries"] for r in rows] + [dense["num_queries"]]
                values = [r[key] for r in rows] + [dense[key]]
                axis.plot(queries, values, style, marker="o", color=color,
                          label=name if strategy == "uniform" else None)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("queries Q (rightmost: all points, no sampling)")
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, title="solid: uniform, dashed: stratified", title_fontsize=8)
    left.set_title("time per call")
    right.set_title("memory")
    figure.suptitle(result.title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
