"""Figures users look at: rollout snapshots (truth, prediction, error) and error against horizon."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _save_horizon_plot(fig, ax, ylabel: str, title: str, path: Path, log: bool = False) -> Path:
    """Label the horizon axis and ``ylabel``, grid, legend, save ``path`` at 120 dpi and close the figure."""
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("horizon step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both" if log else "major")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_error_vs_horizon(model_nrmse: Sequence[float], persistence_nrmse: Sequence[float], path: Path,
                          title: str = "Test rollout error", label: str = "UPT (latent rollout)") -> Path:
    """Line plot of nRMSE per horizon step for the model (legend ``label``) and the persistence baseline."""
    steps = list(range(1, len(model_nrmse) + 1))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(steps, model_nrmse, "o-", label=label)
    ax.plot(steps, persistence_nrmse, "s--", label="persistence")
    return _save_horizon_plot(fig, ax, "nRMSE", title, path)


def conservation_curves(metrics: Mapping[str, float], prefix: str = "test/conservation/") -> dict[str, list[float]]:
    """``{quantity: [drift at h=1, h=2, ...]}`` from logged ``<prefix><quantity>_h<k>`` metrics."""
    curves: dict[str, dict[int, float]] = {}
    for key, value in metrics.items():
        if key.startswith(prefix) and "_h" in key:
            name, _, step = key[len(prefix):].rpartition("_h")
            if step.isdigit():
                curves.setdefault(name, {})[int(step)] = float(value)
    return {name: [steps[k] for k in sorted(steps)] for name, steps in sorted(curves.items())}


def plot_conservation(curves: Mapping[str, Sequence[float]], path: Path, label: str = "UPT") -> Path:
    """Relative drift of each conserved or dissipated quantity from the truth, per horizon step (log scale)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), [max(v, 1e-12) for v in curve], "o-", label=name)
    return _save_horizon_plot(fig, ax, "relative drift from the truth", f"{label}: conservation diagnostics", path,
                              log=True)


def plot_rollout_comparison(curves: Mapping[str, Sequence[float]], persistence_nrmse: Sequence[float], path: Path,
                            title: str = "Test rollout error") -> Path:
    """nRMSE per horizon step of several models (``{legend label: curve}``) beside persistence."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    markers = "o^vD<>p*"
    for index, (label, curve) in enumerate(curves.items()):
        ax.plot(range(1, len(curve) + 1), curve, f"{markers[index % len(markers)]}-", label=label)
    ax.plot(range(1, len(persistence_nrmse) + 1), persistence_nrmse, "s--", color="grey", label="persistence")
    return _save_horizon_plot(fig, ax, "nRMSE", title, path, log=True)


def plot_rollout_snapshots(truth: torch.Tensor, pred: torch.Tensor, coords: torch.Tensor,
                           grid_shape: Sequence[int] | None, horizons: Sequence[int], path: Path,
                           channel: int = 0, channel_name: str = "u") -> Path:
    """Rows truth / prediction / |error| for one channel at the given 1-based horizons.

    truth, pred: (K, N, C) raw values; coords (N, d); grid_shape None for scattered points.
    """
    horizons = [h for h in horizons if 1 <= h <= truth.shape[0]]
    fig, axes = plt.subplots(3, len(horizons), figsize=(3.2 * len(horizons), 8), squeeze=False)
    vmin, vmax = float(truth[..., channel].min()), float(truth[..., channel].max())
    err_max = float((pred - truth)[..., channel].abs().max())
    for col, h in enumerate(horizons):
        rows = (truth[h - 1, :, channel], pred[h - 1, :, channel], (pred - truth)[h - 1, :, channel].abs())
        for row, (values, label) in enumerate(zip(rows, ("truth", "prediction", "|error|"))):
            ax = axes[row][col]
            limits = (0.0, err_max) if row == 2 else (vmin, vmax)
            _draw(ax, values, coords, grid_shape, limits, cmap="magma" if row == 2 else "RdBu_r")
            ax.set_title(f"{label}, {channel_name}, h={h}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw(ax, values, coords, grid_shape, limits, cmap):
    if grid_shape is not None and len(grid_shape) == 2:
        image = ax.imshow(values.reshape(grid_shape).T, origin="lower", cmap=cmap, vmin=limits[0], vmax=limits[1],
                          extent=(0, 1, 0, 1))
        plt.colorbar(image, ax=ax, fraction=0.046)
    elif coords.shape[-1] == 1:
        ax.plot(coords[:, 0], values)
        ax.set_ylim(*limits)
    else:
        image = ax.scatter(coords[:, 0], coords[:, 1], c=values, s=4, cmap=cmap, vmin=limits[0], vmax=limits[1])
        plt.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks([])
    ax.set_yticks([])
