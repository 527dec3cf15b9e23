"""The torchmetrics states and arithmetic shared by the one-step and the rollout metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics import Metric

from upt_lightning.metrics.checks import checked_band_edges, checked_channel_names, spatial_grid_shape
from upt_lightning.metrics.sample_errors import boundary_rmse, max_abs_error, mean_error, rmse, target_rms
from upt_lightning.metrics.spectrum import band_means, band_slices, num_shells, shell_power


class ErrorAccumulator(Metric):
    """Sums of per-sample errors for K steps and C channels, synchronised across DDP ranks.

    States (float64 so that long evaluations do not lose digits), all of shape (K, C) except
    ``count`` () and ``shell_power_sum`` (K, M, C): sums over samples of RMSE, nRMSE, bRMSE, of
    the squared mean error (cRMSE) and of the shell power (fRMSE), reduced by "sum"; the
    largest absolute error, reduced by "max"; and the number of samples.

    Averages are exact per-sample means over everything seen, whatever the batch sizes or the
    number of ranks. PDEBench instead averages per-batch results over batches, including its
    per-batch max error; here the max is the largest error seen.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(
        self,
        num_steps: int,
        num_channels: int,
        grid_shape: Sequence[int] | None,
        channel_names: Sequence[str] | None,
        f_low: int,
        f_high: int,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_steps = int(num_steps)
        self.num_channels = int(num_channels)
        self.channel_names = checked_channel_names(channel_names, self.num_channels)
        self.grid_shape = spatial_grid_shape(grid_shape)
        self.f_low, self.f_high = checked_band_edges(f_low, f_high)
        per_step = (self.num_steps, self.num_channels)
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        for name in ("rmse_sum", "nrmse_sum", "mean_error_sq_sum"):
            self.add_state(name, torch.zeros(per_step, dtype=torch.float64), dist_reduce_fx="sum")
        # Errors are >= 0, so 0 is a neutral start for the running maximum.
        self.add_state("max_err", torch.zeros(per_step, dtype=torch.float64), dist_reduce_fx="max")
        if self.grid_shape is not None:
            self.bands = band_slices(self.grid_shape, self.f_low, self.f_high)
            shells = (self.num_steps, num_shells(self.grid_shape), self.num_channels)
            self.add_state("brmse_sum", torch.zeros(per_step, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("shell_power_sum", torch.zeros(shells, dtype=torch.float64), dist_reduce_fx="sum")

    def _accumulate(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Add checked pred, target (B, K, N, C) with mask (B, N) or None to the sums."""
        batch, steps, points, channels = pred.shape
        dtype = torch.promote_types(pred.dtype, torch.float32)
        flat_target = target.reshape(batch * steps, points, channels).to(dtype)
        error = pred.reshape(batch * steps, points, channels).to(dtype) - flat_target
        flat_mask = None if mask is None else mask.repeat_interleave(steps, dim=0)

        def summed_over_batch(per_sample: torch.Tensor) -> torch.Tensor:
            return per_sample.reshape(batch, steps, *per_sample.shape[1:]).double().sum(dim=0)

        sample_rmse = rmse(error, flat_mask)
        self.rmse_sum += summed_over_batch(sample_rmse)
        self.nrmse_sum += summed_over_batch(sample_rmse / target_rms(flat_target, flat_mask))
        self.mean_error_sq_sum += summed_over_batch(mean_error(error, flat_mask).square())
        batch_max = max_abs_error(error, flat_mask).reshape(batch, steps, channels).amax(dim=0)
        self.max_err = torch.maximum(self.max_err, batch_max.double())
        if self.grid_shape is not None:
            self.brmse_sum += summed_over_batch(boundary_rmse(error, self.grid_shape))
            self.shell_power_sum += summed_over_batch(shell_power(error, self.grid_shape))
        self.count += batch

    def _per_channel(self) -> dict[str, torch.Tensor]:
        """Every metric as a (K, C) tensor, from the (already synchronised) states."""
        if int(self.count) == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() before any update(): no samples to average")
        count = self.count.double()
        values = {
            "rmse": self.rmse_sum / count,
            "nrmse": self.nrmse_sum / count,
            # PDEBench: RMS over samples of the error of the spatial mean.
            "crmse": (self.mean_error_sq_sum / count).sqrt(),
        }
        if self.grid_shape is not None:
            values["brmse"] = self.brmse_sum / count
            # PDEBench: per shell, RMS over samples of |F| divided by the point count.
            shell_rmse = (self.shell_power_sum / count).sqrt() / math.prod(self.grid_shape)
            values.update({f"frmse_{band}": v for band, v in band_means(shell_rmse, self.bands).items()})
        values["max_err"] = self.max_err
        return values

    def _named(self, per_channel: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{metric: channel mean} then {metric/channel_name: value}, each (K,)."""
        out = {key: value.mean(dim=-1) for key, value in per_channel.items()}
        for key, value in per_channel.items():
            out.update({f"{key}/{name}": value[:, c] for c, name in enumerate(self.channel_names)})
        return out
