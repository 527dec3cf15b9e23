"""Build the models from plain config dicts, so hyperparameters stay YAML- and checkpoint-friendly.

``encoder`` is ``{"kind": "grid" | "mesh", **constructor kwargs}``; ``decoder`` and ``operator``
are constructor kwargs. The latent shape (tokens, dim) is shared by all three and passed once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from upt_lightning.models import AnyPointDecoder, GridEncoder, LatentOperator, MeshEncoder

ENCODER_KINDS = ("grid", "mesh")


def build_encoder(
    config: Mapping[str, Any] | None,
    field_channels: Mapping[str, int],
    grid_shape: Sequence[int] | None,
    coord_dim: int,
    latent_tokens: int,
    latent_dim: int,
) -> nn.Module:
    """GridEncoder when kind is "grid" (needs grid_shape), MeshEncoder when "mesh"."""
    kwargs = dict(config or {})
    kind = kwargs.pop("kind", "grid" if grid_shape is not None else "mesh")
    if kind not in ENCODER_KINDS:
        raise ValueError(f"model.encoder.kind={kind!r} is unknown; choose one of {ENCODER_KINDS}")
    common = dict(field_channels=dict(field_channels), latent_tokens=latent_tokens, latent_dim=latent_dim)
    if kind == "grid":
        if grid_shape is None:
            raise ValueError(
                "model.encoder.kind='grid' needs a regular grid, but the data are scattered points: "
                "use encoder kind 'mesh' (MeshEncoder) for mesh data"
            )
        return GridEncoder(grid_shape=tuple(grid_shape), **common, **kwargs)
    return MeshEncoder(coord_dim=coord_dim, **common, **kwargs)


def build_decoder(
    config: Mapping[str, Any] | None, field_channels: Mapping[str, int], coord_dim: int, latent_dim: int
) -> nn.Module:
    return AnyPointDecoder(
        field_channels=dict(field_channels), coord_dim=coord_dim, latent_dim=latent_dim, **dict(config or {})
    )


def build_operator(config: Mapping[str, Any] | None, latent_tokens: int, latent_dim: int) -> nn.Module:
    return LatentOperator(latent_dim=latent_dim, latent_tokens=latent_tokens, **dict(config or {}))
