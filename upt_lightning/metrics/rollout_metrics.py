"""Physical-space errors of autoregressive rollouts, one value per horizon step."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch

from upt_lightning.metrics.accumulator import ErrorAccumulator
from upt_lightning.metrics.checks import check_inputs


class RolloutErrorMetrics(ErrorAccumulator):
    """The metrics of ``FieldErrorMetrics`` for every step k = 1 .. K of a rollout.

    Each step is measured as its own frame, so step k of a rollout gives what
    ``FieldErrorMetrics`` gives for the k-th predicted frames. PDEBench reports the mean over
    time steps of such curves (for rmse, nrmse and max_err alike).

    ``compute()`` returns (K,) float64 tensors: "rmse", "nrmse", "crmse", "max_err" and, on
    grids, "brmse" and "frmse_<band>", each averaged over channels, plus "<name>/<channel_name>"
    per channel.

    Args:
        horizon: K, the number of predicted steps per rollout.
        num_channels, grid_shape, channel_names, f_low, f_high, **kwargs: as ``FieldErrorMetrics``.
    """

    def __init__(
        self,
        horizon: int,
        num_channels: int,
        grid_shape: Sequence[int] | None = None,
        channel_names: Sequence[str] | None = None,
        f_low: int = 4,
        f_high: int = 12,
        **kwargs,
    ):
        if int(horizon) < 1:
            raise ValueError(f"horizon must be at least 1 step, got {horizon}")
        super().__init__(int(horizon), num_channels, grid_shape, channel_names, f_low, f_high, **kwargs)

    def update(
        self, pred_rollout: torch.Tensor, target_rollout: torch.Tensor, mask: torch.Tensor | None = None
    ) -> None:
        """Add rollouts: pred_rollout, target_rollout (B, K, N, C) in physical units; mask (B, N) bool."""
        check_inputs(
            pred_rollout, target_rollout, mask,
            lead_shape="B, K", num_channels=self.num_channels, grid_shape=self.grid_shape,
        )
        if pred_rollout.shape[1] != self.num_steps:
            raise ValueError(
                f"rollouts have {pred_rollout.shape[1]} steps but the metric was built for horizon={self.num_steps}"
            )
        self._accumulate(pred_rollout, target_rollout, mask)

    def compute(self) -> dict[str, torch.Tensor]:
        """{"rmse": (K,), "nrmse": (K,), ..., "rmse/<channel_name>": (K,), ...}."""
        return self._named(self._per_channel())

    def _wrap_compute(self, compute: Callable) -> Callable:
        # torchmetrics squeezes one-element results to 0-dim; horizon 1 must still give (1,).
        wrapped = super()._wrap_compute(compute)

        @functools.wraps(compute)
        def keep_step_axis(*args, **kwargs):
            return {key: value.reshape(self.num_steps) for key, value in wrapped(*args, **kwargs).items()}

        return keep_step_axis
