"""Fixed (parameter-free) features of positions and time steps.

Coordinates handed to the models are normalised to roughly ``[0, 1]^d``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SincosEmbedding(nn.Module):
    """Transformer-style sin-cos features of continuous positions, one block of channels per axis.

    Each axis gets ``2 * (dim // (2 * coord_dim))`` channels: ``sin(x * scale * w_j)`` and
    ``cos(x * scale * w_j)`` with ``w_j = max_wavelength ** (-j / half)``. ``scale`` maps ``[0, 1]``
    to ``[0, scale]`` so the fastest frequency resolves about ``1 / scale`` of the domain while the
    slowest one stays nearly linear across it. Channels left over when ``dim`` is not a multiple
    of ``2 * coord_dim`` are zero, so any ``dim`` works.

    Input ``(..., coord_dim)``, output ``(..., dim)``.
    """

    def __init__(self, coord_dim: int, dim: int, scale: float = 1000.0, max_wavelength: float = 10_000.0):
        super().__init__()
        half = dim // (2 * coord_dim)
        if half < 1:
            raise ValueError(
                f"sin-cos embedding of {coord_dim}-d positions needs dim >= {2 * coord_dim}, got dim={dim}"
            )
        self.coord_dim = coord_dim
        self.dim = dim
        self.scale = scale
        self.max_wavelength = max_wavelength
        self.padding = dim - 2 * half * coord_dim
        omega = max_wavelength ** (-torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("omega", omega.float(), persistent=False)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        if coords.shape[-1] != self.coord_dim:
            raise ValueError(
                f"positions have {coords.shape[-1]} coordinates in their last axis, "
                f"this embedding was built for {self.coord_dim}"
            )
        angles = (coords.unsqueeze(-1) * self.scale) * self.omega  # (..., coord_dim, half)
        features = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
        if self.padding:
            features = nn.functional.pad(features, (0, self.padding))
        return features


class FourierFeatures(nn.Module):
    """Fourier features ``[x, sin(2 pi 2^k x), cos(2 pi 2^k x)]`` for ``k < num_frequencies``.

    The raw coordinates are kept because the slowest pair (period 1) cannot tell 0 from 1 on a
    non-periodic unit domain; ``periodic=True`` (a domain of period 1, where 0 and 1 are the same
    point) leaves them out, so the features, and whatever is computed from them, have period 1.
    Input ``(..., coord_dim)``, output ``(..., out_dim)`` with ``out_dim = coord_dim * (2 *
    num_frequencies + 1)``, or ``coord_dim * 2 * num_frequencies`` when periodic.
    """

    def __init__(self, coord_dim: int, num_frequencies: int, periodic: bool = False):
        super().__init__()
        if num_frequencies < 1:
            raise ValueError(f"num_frequencies must be at least 1, got {num_frequencies}")
        self.coord_dim = coord_dim
        self.num_frequencies = num_frequencies
        self.periodic = bool(periodic)
        self.out_dim = coord_dim * (2 * num_frequencies + (0 if self.periodic else 1))
        frequencies = 2.0 * math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float64)
        self.register_buffer("frequencies", frequencies.float(), persistent=False)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        angles = (coords.unsqueeze(-1) * self.frequencies).flatten(-2)  # (..., coord_dim * F)
        parts = [angles.sin(), angles.cos()]
        return torch.cat(parts if self.periodic else [coords, *parts], dim=-1)
