"""Normalisation statistics that travel inside checkpoints.

The data pipeline hands out raw physical values; the LightningModules normalise them with the
training split's statistics kept here as buffers, so ``Module.load_from_checkpoint(path)``
alone maps raw fields to raw predictions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

_STAT_KEYS = ("field_mean", "field_std", "coord_min", "coord_max")


class FieldNormalizer(nn.Module):
    """Per-channel field standardisation, coordinate scaling to [0, 1]^d and a reference dt.

    Buffers: field_mean, field_std (C,); coord_min, coord_max (d,); dt_ref (); initialised (bool).
    Until :meth:`set_stats` is called the transform is the identity (mean 0, std 1, box [0, 1]).
    """

    def __init__(self, num_channels: int, coord_dim: int):
        super().__init__()
        self.num_channels = num_channels
        self.coord_dim = coord_dim
        self.register_buffer("field_mean", torch.zeros(num_channels))
        self.register_buffer("field_std", torch.ones(num_channels))
        self.register_buffer("coord_min", torch.zeros(coord_dim))
        self.register_buffer("coord_max", torch.ones(coord_dim))
        self.register_buffer("dt_ref", torch.tensor(1.0))
        self.register_buffer("initialised", torch.tensor(False))

    def set_stats(self, stats: Mapping[str, torch.Tensor], dt: float | None = None) -> None:
        """Copy statistics from a DataModule (``stats`` dict: field_mean/std (C,), coord_min/max (d,))."""
        missing = [k for k in _STAT_KEYS if k not in stats]
        if missing:
            raise KeyError(f"normalisation stats lack {missing}; a DataModule's .stats provides them after setup()")
        for key, size in zip(_STAT_KEYS, (self.num_channels,) * 2 + (self.coord_dim,) * 2):
            value = torch.as_tensor(stats[key], dtype=torch.float32).reshape(-1)
            if value.numel() != size:
                raise ValueError(
                    f"stats[{key!r}] has {value.numel()} entries but the model was built for {size}: "
                    "the data's channels or coordinate dimension differ from the model's"
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"stats[{key!r}] contains NaN or Inf: check the training data")
            getattr(self, key).copy_(value)
        if (self.field_std <= 0).any():
            raise ValueError("field_std must be positive for every channel")
        if dt is not None:
            if not dt > 0:
                raise ValueError(f"reference dt must be positive, got {dt}")
            self.dt_ref.fill_(float(dt))
        self.initialised.fill_(True)

    def normalize_fields(self, fields: torch.Tensor) -> torch.Tensor:
        """(..., C) raw -> (..., C) standardised."""
        return (fields - self.field_mean) / self.field_std

    def denormalize_fields(self, fields: torch.Tensor) -> torch.Tensor:
        """(..., C) standardised -> (..., C) raw."""
        return fields * self.field_std + self.field_mean

    def normalize_coords(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., d) raw coordinates -> (..., d) scaled so the training domain spans [0, 1]."""
        span = (self.coord_max - self.coord_min).clamp_min(1e-12)
        return (coords - self.coord_min) / span

    def normalize_dt(self, dt: torch.Tensor | float) -> torch.Tensor:
        """Time step in units of the training data's frame spacing (1.0 = one frame)."""
        return torch.as_tensor(dt, dtype=self.dt_ref.dtype, device=self.dt_ref.device) / self.dt_ref
