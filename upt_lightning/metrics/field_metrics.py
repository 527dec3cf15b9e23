"""One-step physical-space errors of a batch of predicted fields: PDEBench's metric set."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from upt_lightning.metrics.accumulator import ErrorAccumulator
from upt_lightning.metrics.checks import check_inputs


class FieldErrorMetrics(ErrorAccumulator):
    """RMSE, nRMSE, cRMSE, bRMSE, fRMSE (low / mid / high) and max error of raw physical fields.

    Definitions (PDEBench ``metric_func``, per sample s and channel c over the points x):
        rmse      mean_s sqrt(mean_x e^2),        e = pred - target
        nrmse     mean_s sqrt(mean_x e^2) / sqrt(mean_x target^2)
        crmse     sqrt(mean_s (mean_x e)^2)       error of the conserved quantity
        brmse     mean_s sqrt(mean over the grid faces of e^2)          (grids only)
        frmse_*   per shell k: sqrt(mean_s |F_k|^2) / N, averaged over the shells of a band
                  low k < f_low, mid f_low <= k < f_high, high k >= f_high (grids only;
                  see ``upt_lightning.metrics.spectrum`` for the nD shells)
        max_err   max_s max_x |e|
    ``compute()`` returns the mean over channels under the plain name (as PDEBench's
    ``if_mean``; for max_err the mean of the per-channel maxima) and each channel's value
    under "<name>/<channel_name>", all as 0-dim float64 tensors. Meshes (grid_shape None) get
    no brmse/frmse; a band that the grid is too coarse for is left out.

    Args:
        num_channels: C, the channel count of the fields.
        grid_shape: grid axes, N = prod(grid_shape) points in row-major order; None for meshes.
        channel_names: names for the per-channel keys (default "ch0", "ch1", ...).
        f_low, f_high: band edges on the radial wavenumber (PDEBench's iLow = 4, iHigh = 12).
        **kwargs: torchmetrics ``Metric`` options (e.g. ``sync_on_compute``).
    """

    def __init__(
        self,
        num_channels: int,
        grid_shape: Sequence[int] | None = None,
        channel_names: Sequence[str] | None = None,
        f_low: int = 4,
        f_high: int = 12,
        **kwargs,
    ):
        super().__init__(1, num_channels, grid_shape, channel_names, f_low, f_high, **kwargs)

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add a batch: pred, target (B, N, C) in physical units; mask (B, N) bool, True = real point."""
        check_inputs(pred, target, mask, lead_shape="B", num_channels=self.num_channels, grid_shape=self.grid_shape)
        self._accumulate(pred.unsqueeze(1), target.unsqueeze(1), mask)

    def compute(self) -> dict[str, torch.Tensor]:
        """{"rmse": (), "nrmse": (), ..., "rmse/<channel_name>": (), ...}."""
        return {key: value.squeeze(0) for key, value in self._named(self._per_channel()).items()}
