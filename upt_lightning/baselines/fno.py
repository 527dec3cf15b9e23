"""A stock Fourier Neural Operator trained on UPT's data and evaluated with UPT's metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from upt_lightning.baselines.grid_layout import fourier_resample, grid_axes, to_grid, to_points
from upt_lightning.baselines.neuralop_base import NeuralopBaseline, check_positive_ints
from upt_lightning.baselines.neuralop_import import require_neuralop
from upt_lightning.models.upt import check_decode_steps
from upt_lightning.modules.base import PreparedBatch, normalised_batch
from upt_lightning.modules.optim import OptimSettings


def modes_per_axis(n_modes: int | Sequence[int], grid_shape: Sequence[int]) -> tuple[int, ...]:
    """``n_modes`` as one positive count per grid axis (an int applies to every axis)."""
    modes = [n_modes] * len(grid_shape) if isinstance(n_modes, int) else list(n_modes)
    if len(modes) != len(grid_shape) or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in modes):
        raise ValueError(f"n_modes={n_modes!r} must be a positive int or one per axis of the grid {tuple(grid_shape)}")
    return tuple(modes)


class FNOModule(NeuralopBaseline):
    """``neuralop.models.FNO`` as a next-step surrogate, the baseline UPT is compared with.

    It predicts the change over one frame, ``u_{t+1} = u_t + FNO(u_t)`` on normalised fields: an untrained
    model then starts at persistence, and the network learns the increment, which is small beside the
    field. The loss is the MSE of the normalised next frame. Batches are the DataModule's, as for UPT:
    fields (B, N, C) on a row-major grid, targets (B, K, N, C) (the first frame is the training target),
    normalised with the training split's statistics (set from the DataModule at ``setup``, kept in the
    checkpoint). Validation and test report UPT's metrics under the same names
    (:class:`~upt_lightning.baselines.neuralop_base.NeuralopBaseline`, on the base it shares with UPT's modules). The FNO has no time input: every step is one training frame.

    Args:
        field_channels: ordered field spec, e.g. {"u": 1, "v": 1}.
        grid_shape: the training grid, e.g. (64, 64); batches list its points in row-major order.
        n_modes: Fourier modes kept per axis, an int for every axis or one per axis; (16, 16) in 2D and
            (16,) in 1D by default. At most the grid's points along each axis: more modes would never be
            trained, and a finer grid would use their random weights.
        hidden_channels, n_layers: width and number of Fourier layers.
        fno_kwargs: further keyword arguments of ``neuralop.models.FNO`` (e.g. {"norm": "group_norm"}).
        optim: an :class:`~upt_lightning.modules.optim.OptimSettings` or a mapping of its arguments (the ``optim``
            config group with ``stage2.lr``), as for UPT's stages; by default AdamW at 1e-3 with a cosine to 0
            over the run's steps (or its time budget).
        nan_policy: "raise" or "skip" on a NaN/Inf training loss, as for the UPT modules.
        conservation: the data set's declared quantities, whose drift the rollouts report (as for UPT).
    """

    label = "FNO"

    def __init__(
        self,
        field_channels: Mapping[str, int],
        grid_shape: Sequence[int],
        n_modes: int | Sequence[int] = 16,
        hidden_channels: int = 32,
        n_layers: int = 4,
        fno_kwargs: Mapping[str, Any] | None = None,
        optim: OptimSettings | Mapping[str, Any] | None = None,
        nan_policy: Literal["raise", "skip"] = "raise",
        conservation: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if grid_shape is None:
            raise ValueError("the FNO baseline needs grid data (grid_shape), not scattered points: use a UPT model "
                             "(its MeshEncoder reads meshes) for mesh data")
        self.grid_shape = tuple(int(size) for size in grid_shape)
        modes = modes_per_axis(n_modes, self.grid_shape)
        too_many = [(axis, m, size) for axis, (m, size) in enumerate(zip(modes, self.grid_shape)) if m > size]
        if too_many:
            axis, m, size = too_many[0]
            raise ValueError(f"n_modes={m} on grid axis {axis} exceeds its {size} points; choose at most {size}")
        check_positive_ints(hidden_channels=hidden_channels, n_layers=n_layers)
        optim = self.init_baseline(field_channels, len(self.grid_shape), optim, nan_policy)
        fno_class = require_neuralop()
        self.fno = fno_class(n_modes=modes, in_channels=self.num_channels, out_channels=self.num_channels,
                             hidden_channels=hidden_channels, n_layers=n_layers, **dict(fno_kwargs or {}))
        self.save_init_arguments()
        self.init_forecast_evaluation(self.channel_names(), conservation)

    # ----------------------------------------------------------------- setup
    def data_identity(self, data) -> tuple[dict, dict]:
        return ({"fields": dict(data.field_spec), "grid": data.grid_shape},
                {"fields": self.field_spec, "grid": self.grid_shape})

    def prepare_batch(self, batch: Mapping[str, torch.Tensor]) -> PreparedBatch:
        """Normalise a grid batch: fields (B, N, C), targets (B, K, N, C), coords (B, N, d), dt (B,)."""
        if batch.get("mask") is not None:
            raise ValueError("the FNO baseline reads grid batches, got a mesh batch (it has a mask): use grid data")
        raw_fields, raw_targets = batch["fields"].float(), batch["targets"].float()
        points = (math.prod(self.grid_shape), self.num_channels)
        if raw_fields.shape[1:] != points or raw_targets.ndim != 4 or raw_targets.shape[2:] != points:
            raise ValueError(
                f"an FNO for grid {self.grid_shape} and fields {self.field_spec} reads fields (B, {points[0]}, "
                f"{points[1]}) and targets (B, K, {points[0]}, {points[1]}), got {tuple(raw_fields.shape)} and "
                f"{tuple(raw_targets.shape)}"
            )
        return normalised_batch(batch, self.normalizer, self.field_spec)

    # ---------------------------------------------------------------- model
    def step_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """One frame ahead on any grid of the training domain: normalised (B, C, *grid) -> (B, C, *grid)."""
        return grid + self.fno(grid)

    def _roll(self, grid: torch.Tensor, steps: int, keep: Sequence[int]) -> torch.Tensor:
        """Normalised (B, C, *grid) -> the kept 1-based steps, in ``keep``'s order, as normalised points
        (B, len(keep), N, C); no step past the last kept one is taken."""
        outputs = {}
        for k in range(1, max(keep) + 1):
            grid = self.step_grid(grid)
            if k in keep:
                outputs[k] = to_points(grid)
        return torch.stack([outputs[k] for k in keep], dim=1)

    def predict_next_normalised(self, b: PreparedBatch) -> torch.Tensor:
        return to_points(self.step_grid(to_grid(b.fields, self.grid_shape)))

    def rollout_batch_normalised(self, b: PreparedBatch, steps: int) -> torch.Tensor:
        return self._roll(to_grid(b.fields, self.grid_shape), steps, list(range(1, steps + 1)))

    # -------------------------------------------------------------- inference
    @torch.no_grad()
    def rollout(self, fields: torch.Tensor, coords: torch.Tensor, steps: int, dt: torch.Tensor | float | None = None,
                query_points: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                decode_steps: Sequence[int] | None = None) -> torch.Tensor:
        """Autoregressive prediction in physical units, with ``OperatorModule.rollout``'s arguments.

        Args:
            fields: raw fields (B, N, C) on the training grid at raw ``coords`` (B, N, d), row-major.
            steps: number of FNO steps, one training frame each.
            dt: None or the data's frame spacing (float or (B,)): the FNO has no time input.
            query_points: raw points (B, Q, d) of a regular grid over the same periodic domain, the training
                grid (default) or a finer one: the input is interpolated onto it (trigonometric
                interpolation) and every step runs there with the same weights (zero-shot super-resolution).
            mask: None; the FNO reads grids, not padded meshes.
            decode_steps: distinct 1-based steps in ``1..steps`` to return, in the order wanted (default all).
        Returns:
            raw predictions (B, S, Q, C), S = len(decode_steps) or steps, in the order of ``decode_steps``.
        """
        if mask is not None:
            raise ValueError("the FNO baseline reads grids: mask must be None (padded meshes are not grids)")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        keep = check_decode_steps(decode_steps, steps)
        self.check_frame_dt(dt)
        norm = self.normalizer
        grid = to_grid(norm.normalize_fields(fields.float()), self.grid_shape)
        if query_points is not None and query_points is not coords:
            grid = fourier_resample(grid, grid_axes(coords, "coords"), grid_axes(query_points, "query_points"))
        return norm.denormalize_fields(self._roll(grid, steps, keep))

    def forward(self, fields, coords, dt=None, query_points=None, mask=None) -> torch.Tensor:
        """Raw fields (B, N, C) -> raw next-step prediction (B, Q, C)."""
        return self.rollout(fields, coords, 1, dt=dt, query_points=query_points, mask=mask)[:, 0]
