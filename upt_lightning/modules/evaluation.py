"""Physical-space evaluation shared by both stages: model metrics beside the persistence baseline."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn

from upt_lightning.metrics import FieldErrorMetrics, RolloutErrorMetrics
from upt_lightning.metrics.conservation import ConservationDrift

# The val/test values are logged from torchmetrics states that compute() already synced across ranks, so
# Lightning's advice to add sync_dist=True (one warning per key under DDP) does not apply.
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|test)/",
                        category=PossibleUserWarning)


def without_padding(batch: Mapping) -> Mapping | None:
    """``batch`` without the rows that pad evaluation shards under DDP (data/even_shards.py); None if all are."""
    padding = batch.get("padding")
    if padding is None:
        return batch
    keep = ~padding
    if not bool(keep.any()):
        return None
    return {key: value[keep] if isinstance(value, torch.Tensor) and value.shape[:1] == keep.shape else value
            for key, value in batch.items() if key != "padding"}


def updated_on_any_rank(metric) -> bool:
    """Whether any DDP rank updated ``metric``; every rank must then compute it (compute() syncs)."""
    count = metric.update_count
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        total = torch.tensor(count, device=metric.device)
        dist.all_reduce(total)
        count = int(total)
    return count > 0


def synced_compute(metric) -> dict[str, torch.Tensor]:
    """``metric.compute()``, which syncs across ranks; a rank whose shard was all padding joins with empty
    states (torchmetrics' warning about a compute before any update is expected there)."""
    with warnings.catch_warnings():
        if metric.update_count == 0:
            warnings.filterwarnings("ignore", message=r".*was called before the ``update`` method")
        return metric.compute()


class OneStepEvaluation(nn.Module):
    """Accumulates one-step errors of the model and of persistence (prediction = input frame)."""

    def __init__(self, num_channels: int, grid_shape: Sequence[int] | None, channel_names: Sequence[str]):
        super().__init__()
        kwargs = dict(num_channels=num_channels, grid_shape=grid_shape, channel_names=list(channel_names))
        self.model = FieldErrorMetrics(**kwargs)
        self.persistence = FieldErrorMetrics(**kwargs)

    def update(self, pred, target, last_input=None, mask=None) -> None:
        """pred, target, last_input: raw (B, N, C); last_input None skips the baseline."""
        self.model.update(pred.float(), target.float(), mask)
        if last_input is not None:
            self.persistence.update(last_input.float(), target.float(), mask)

    def compute_and_reset(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {}
        if updated_on_any_rank(self.model):
            out.update({f"{prefix}/{k}": v for k, v in synced_compute(self.model).items()})
        if updated_on_any_rank(self.persistence):
            out.update({f"{prefix}/persistence_{k}": v for k, v in synced_compute(self.persistence).items()})
        self.model.reset()
        self.persistence.reset()
        return out


def starts_reported_apart(starts: Sequence[int] | None) -> list[int]:
    """The rollout start frames that get figures of their own: all of them when there are several, none for
    one start (its figures are the plain ones)."""
    return sorted(int(s) for s in starts) if starts is not None and len(starts) > 1 else []


class RolloutEvaluation(nn.Module):
    """Accumulates per-horizon-step rollout errors of the model and of persistence, and the drift of the
    data set's conserved or dissipated quantities (``conserved``: ``resolve_quantities`` of its declaration,
    see metrics/conservation.py).

    With several ``starts`` (the start frames of the rollout windows, ``data.rollout_starts``) the model's and
    persistence's nRMSE are also kept per start (``<prefix>/start<t0>/rollout_nrmse_h<k>``); the plain keys
    average over every window, hence over the starts.
    """

    def __init__(self, horizon: int, num_channels: int, grid_shape, channel_names: Sequence[str],
                 conserved: Mapping | None = None, starts: Sequence[int] | None = None):
        super().__init__()
        kwargs = dict(horizon=horizon, num_channels=num_channels, grid_shape=grid_shape,
                      channel_names=list(channel_names))
        self.horizon = horizon
        self.model = RolloutErrorMetrics(**kwargs)
        self.persistence = RolloutErrorMetrics(**kwargs)
        self.conservation = ConservationDrift(conserved, horizon) if conserved else None
        self.starts = starts_reported_apart(starts)
        self.by_start = nn.ModuleDict({f"{name}_{s}": RolloutErrorMetrics(**kwargs) for s in self.starts
                                       for name in ("rollout", "persistence_rollout")})

    def update(self, pred, target, last_input, mask=None, t0=None) -> None:
        """pred, target: raw (B, K, N, C); last_input: raw (B, N, C); t0: (B,) start frames (with ``starts``)."""
        self.model.update(pred.float(), target.float(), mask)
        baseline = last_input.float().unsqueeze(1).expand_as(target)
        self.persistence.update(baseline, target.float(), mask)
        if self.conservation is not None:
            self.conservation.update(pred, target, mask)
        if self.starts:
            if t0 is None:
                raise ValueError("rollout metrics per start need the windows' start frames (t0)")
            for start in t0.unique().tolist():
                rows = t0 == start
                sub_mask = None if mask is None else mask[rows]
                self.by_start[f"rollout_{start}"].update(pred[rows].float(), target[rows].float(), sub_mask)
                self.by_start[f"persistence_rollout_{start}"].update(baseline[rows], target[rows].float(), sub_mask)

    def compute_and_reset(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {}
        if updated_on_any_rank(self.model):
            for name, metrics in (("rollout", self.model), ("persistence_rollout", self.persistence)):
                values = synced_compute(metrics)
                for key in ("nrmse", "rmse"):
                    per_step = values[key]
                    for k in range(per_step.shape[0]):
                        out[f"{prefix}/{name}_{key}_h{k + 1}"] = per_step[k]
                    out[f"{prefix}/{name}_{key}_last"] = per_step[-1]
        for key, metrics in self.by_start.items():
            name, start = key.rsplit("_", 1)
            if updated_on_any_rank(metrics):
                per_step = synced_compute(metrics)["nrmse"]
                for k in range(per_step.shape[0]):
                    out[f"{prefix}/start{start}/{name}_nrmse_h{k + 1}"] = per_step[k]
            metrics.reset()
        if self.conservation is not None:
            if updated_on_any_rank(self.conservation):
                for name, per_step in synced_compute(self.conservation).items():
                    for k in range(per_step.shape[0]):
                        out[f"{prefix}/conservation/{name}_h{k + 1}"] = per_step[k]
            self.conservation.reset()
        self.model.reset()
        self.persistence.reset()
        return out
