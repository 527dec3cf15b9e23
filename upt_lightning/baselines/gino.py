"""A stock Geometry-Informed Neural Operator (``neuralop.models.GINO``) trained on UPT's point data and evaluated
with UPT's metrics: the baseline for scattered points and meshes, where a grid model cannot go."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from upt_lightning.baselines.neuralop_base import NeuralopBaseline, check_positive_ints
from upt_lightning.baselines.neuralop_import import require_gino
from upt_lightning.models.anchors import cell_centred_grid
from upt_lightning.models.upt import check_decode_steps
from upt_lightning.modules.base import PreparedBatch, normalised_batch
from upt_lightning.modules.optim import OptimSettings

# Sizes of GINO's graph operators, smaller than neuralop's defaults (sized for 3D car surfaces): on the 2D
# Burgers meshes these train about 3x faster per sample; ``gino_kwargs`` overrides any of them.
GINO_DEFAULTS = {"in_gno_channel_mlp_hidden_layers": [64, 64], "out_gno_channel_mlp_hidden_layers": [128, 64],
                 "gno_embed_channels": 16}


class GINOModule(NeuralopBaseline):
    """``neuralop.models.GINO`` as a next-step surrogate on any points: a graph operator from the sample's points
    onto a latent grid over [0, 1]^d, an FNO there, a graph operator back to the points.

    Like the FNO baseline it predicts the change over one frame, ``u_{t+1} = u_t + GINO(u_t)`` on normalised
    fields, at the sample's own points (training loss: the MSE of the normalised next frame over the real points
    of a padded mesh batch). Batches are the DataModules', grid or mesh; normalisation is the training split's
    (coordinates to [0, 1]^d, so the latent grid covers the domain). GINO batches only samples that share their
    points, so each sample of a mesh batch runs on its own; the neighbour sums use a vectorised pure-torch
    reduction (baselines/neuralop_import.py), no compiled extension.

    Args:
        field_channels: ordered field spec, e.g. {"u": 1, "v": 1}.
        coord_dim: spatial dimension d of the points.
        latent_grid: points of the latent grid per axis (an int for every axis, or one per axis).
        radius: neighbourhood radius of both graph operators, in normalised coordinates ([0, 1]^d).
        n_modes: Fourier modes of the latent FNO per axis, at most ``latent_grid // 2 + 1``.
        hidden_channels, n_layers: width and depth of the latent FNO.
        gino_kwargs: further keyword arguments of ``neuralop.models.GINO`` (over :data:`GINO_DEFAULTS`).
        optim, nan_policy, conservation: as for the FNO baseline (:class:`~upt_lightning.baselines.FNOModule`).
    """

    label = "GINO"

    def __init__(
        self,
        field_channels: Mapping[str, int],
        coord_dim: int = 2,
        latent_grid: int | Sequence[int] = 24,
        radius: float = 0.08,
        n_modes: int = 8,
        hidden_channels: int = 32,
        n_layers: int = 4,
        gino_kwargs: Mapping[str, Any] | None = None,
        optim: OptimSettings | Mapping[str, Any] | None = None,
        nan_policy: Literal["raise", "skip"] = "raise",
        conservation: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        sizes = [latent_grid] * int(coord_dim) if isinstance(latent_grid, int) else [int(n) for n in latent_grid]
        if len(sizes) != int(coord_dim) or any(n < 2 for n in sizes):
            raise ValueError(f"latent_grid={latent_grid!r} must be an int >= 2 or one per axis of the {coord_dim}-d points")
        check_positive_ints(n_modes=n_modes, hidden_channels=hidden_channels, n_layers=n_layers)
        if n_modes > min(sizes) // 2 + 1:
            raise ValueError(f"n_modes={n_modes} exceeds what a latent grid of {min(sizes)} points resolves; choose "
                             f"at most {min(sizes) // 2 + 1} or a larger latent_grid")
        if not 0 < radius < 1:
            raise ValueError(f"radius={radius!r} must lie in (0, 1): it is measured in normalised coordinates")
        optim = self.init_baseline(field_channels, coord_dim, optim, nan_policy)
        self.coord_dim = int(coord_dim)
        self.grid_shape = None  # evaluated as points: the metrics need no grid
        channels = self.num_channels
        self.gino = require_gino()(
            in_channels=channels, out_channels=channels, gno_coord_dim=self.coord_dim, in_gno_radius=radius,
            out_gno_radius=radius, fno_n_modes=(n_modes,) * self.coord_dim, fno_hidden_channels=hidden_channels,
            fno_n_layers=n_layers, fno_in_channels=channels, gno_use_open3d=False, gno_use_torch_scatter=False,
            **{**GINO_DEFAULTS, **dict(gino_kwargs or {})},
        )
        self.register_buffer("latent_queries", cell_centred_grid(sizes), persistent=False)  # (*sizes, d)
        self.save_init_arguments()
        self.init_forecast_evaluation(self.channel_names(), conservation)

    # ----------------------------------------------------------------- setup
    def data_identity(self, data) -> tuple[dict, dict]:
        return ({"fields": dict(data.field_spec), "coordinate dimension": data.coord_dim},
                {"fields": self.field_spec, "coordinate dimension": self.coord_dim})

    def prepare_batch(self, batch: Mapping[str, torch.Tensor]) -> PreparedBatch:
        """Normalise a grid or mesh batch (:func:`~upt_lightning.modules.base.normalised_batch`)."""
        return normalised_batch(batch, self.normalizer, self.field_spec)

    # ---------------------------------------------------------------- model
    def step_points(self, fields: torch.Tensor, coords: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """One frame ahead: normalised fields (B, N, C) at normalised coords (B, N, d), real points ``mask`` (B, N)
        or None -> the next fields at the same points (B, N, C); padded points are carried along unchanged."""
        latent = self.latent_queries[None]
        nexts = []
        for i in range(fields.shape[0]):
            real = slice(None) if mask is None else mask[i]
            points, values = coords[i, real][None], fields[i, real][None]
            nexts.append(values[0] + self.gino(input_geom=points, latent_queries=latent, output_queries=points,
                                               x=values)[0])
        if mask is None:
            return torch.stack(nexts)
        stepped = fields.clone()
        for i, values in enumerate(nexts):
            stepped[i, mask[i]] = values
        return stepped

    def predict_next_normalised(self, b: PreparedBatch) -> torch.Tensor:
        return self.step_points(b.fields, b.coords, b.mask)

    def rollout_batch_normalised(self, b: PreparedBatch, steps: int) -> torch.Tensor:
        frames, current = [], b.fields
        for _ in range(steps):
            current = self.step_points(current, b.coords, b.mask)
            frames.append(current)
        return torch.stack(frames, dim=1)

    # -------------------------------------------------------------- inference
    @torch.no_grad()
    def rollout(self, fields: torch.Tensor, coords: torch.Tensor, steps: int, dt: torch.Tensor | float | None = None,
                query_points: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                decode_steps: Sequence[int] | None = None) -> torch.Tensor:
        """Raw fields (B, N, C) at raw coords (B, N, d) (real points ``mask`` (B, N) or None) -> raw predictions
        (B, S, N, C) at the same points, ``OperatorModule.rollout``'s arguments. ``query_points``: None or ``coords``:
        the model predicts the change of the field at its input points, and the field itself is known nowhere else.
        ``dt``: None or the data's frame spacing (GINO has no time input: one step is one training frame)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        keep = check_decode_steps(decode_steps, steps)
        if query_points is not None and query_points is not coords and not torch.equal(query_points, coords):
            raise ValueError("the GINO baseline predicts the change of the field at its input points, so it predicts "
                             "at those points only: pass query_points=None (UPT's decoder evaluates anywhere)")
        self.check_frame_dt(dt)
        norm = self.normalizer
        points, current, outputs = norm.normalize_coords(coords.float()), norm.normalize_fields(fields.float()), {}
        for k in range(1, max(keep) + 1):
            current = self.step_points(current, points, mask)
            if k in keep:
                outputs[k] = current
        return norm.denormalize_fields(torch.stack([outputs[k] for k in keep], dim=1))

    def forward(self, fields, coords, dt=None, query_points=None, mask=None) -> torch.Tensor:
        """Raw fields (B, N, C) -> raw next-step prediction (B, Q, C)."""
        return self.rollout(fields, coords, 1, dt=dt, query_points=query_points, mask=mask)[:, 0]
