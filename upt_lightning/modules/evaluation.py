"""Physical-space evaluation shared by both stages: model metrics beside the persistence baseline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from upt_lightning.metrics import FieldErrorMetrics, RolloutErrorMetrics


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
        if self.model.update_count:
            out.update({f"{prefix}/{k}": v for k, v in self.model.compute().items()})
        if self.persistence.update_count:
            out.update({f"{prefix}/persistence_{k}": v for k, v in self.persistence.compute().items()})
        self.model.reset()
        self.persistence.reset()
        return out


class RolloutEvaluation(nn.Module):
    """Accumulates per-horizon-step rollout errors of the model and of persistence."""

    def __init__(self, horizon: int, num_channels: int, grid_shape, channel_names: Sequence[str]):
        super().__init__()
        kwargs = dict(horizon=horizon, num_channels=num_channels, grid_shape=grid_shape,
                      channel_names=list(channel_names))
        self.horizon = horizon
        self.model = RolloutErrorMetrics(**kwargs)
        self.persistence = RolloutErrorMetrics(**kwargs)

    def update(self, pred, target, last_input, mask=None) -> None:
        """pred, target: raw (B, K, N, C); last_input: raw (B, N, C)."""
        self.model.update(pred.float(), target.float(), mask)
        baseline = last_input.float().unsqueeze(1).expand_as(target)
        self.persistence.update(baseline, target.float(), mask)

    def compute_and_reset(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {}
        if self.model.update_count:
            for name, metrics in (("rollout", self.model), ("persistence_rollout", self.persistence)):
                values = metrics.compute()
                for key in ("nrmse", "rmse"):
                    per_step = values[key]
                    for k in range(per_step.shape[0]):
                        out[f"{prefix}/{name}_{key}_h{k + 1}"] = per_step[k]
                    out[f"{prefix}/{name}_{key}_last"] = per_step[-1]
        self.model.reset()
        self.persistence.reset()
        return out
