"""Perceiver decoder: evaluate the fields at any query points from the latent tokens."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from upt_lightning.fields import validate_field_spec
from upt_lightning.models.anchors import anchor_grid, locality_bias
from upt_lightning.models.attention import Mlp
from upt_lightning.models.blocks import CrossAttentionBlock
from upt_lightning.models.embeddings import FourierFeatures
from upt_lightning.models.validation import check_finite, check_heads, check_points_tensor, check_positive_int


class AnyPointDecoder(nn.Module):
    """Decode ``latent (B, T, latent_dim)`` at ``points (B, Q, coord_dim)`` into ``{name: (B, Q, C_f)}``.

    Query positions get Fourier features (frequencies ``2 pi 2^k``, ``k < num_frequencies``) and an
    MLP embedding, then ``depth`` cross-attention layers to the projected latent tokens and one
    linear head per field. With ``locality`` each query starts by reading the tokens anchored near it
    (models/anchors.py); ``learned_locality`` gives each head its own learned sharpness of that bias.
    ``periodic``: the points live on a domain of period 1 in every coordinate (the DataModule's
    ``period`` puts them there): the locality bias measures distances to the nearest periodic image
    and the query features leave out the raw coordinates, so the decoded fields have period 1 exactly.
    Queries never attend to each other: any subset of points can be decoded, rows do not depend on the
    other queries and the cost is linear in ``Q``.

    With ``chunk_size`` set (argument of ``forward``, else the attribute) and ``Q > chunk_size``
    the queries are decoded in chunks and concatenated; the values equal the unchunked path and,
    under ``torch.no_grad``, memory is bounded by the chunk.
    """

    def __init__(
        self,
        field_channels: Mapping[str, int],
        coord_dim: int,
        latent_dim: int,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        num_frequencies: int = 8,
        mlp_ratio: float = 4.0,
        chunk_size: int | None = None,
        locality: bool = True,
        periodic: bool = False,
        learned_locality: bool = False,
    ):
        super().__init__()
        self.field_channels = validate_field_spec(field_channels)
        self.coord_dim = check_positive_int("coord_dim", coord_dim)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        check_heads(dim, num_heads)
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.num_frequencies = num_frequencies
        self.mlp_ratio = mlp_ratio
        self.chunk_size = None if chunk_size is None else check_positive_int("chunk_size", chunk_size)

        self.periodic = bool(periodic)
        self.query_features = FourierFeatures(self.coord_dim, num_frequencies, periodic=self.periodic)
        self.query_embed = Mlp(self.query_features.out_dim, dim, dim)
        self.latent_proj = nn.Linear(latent_dim, dim)
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleList(nn.Linear(dim, channels) for channels in self.field_channels.values())
        self.locality = bool(locality)
        if learned_locality and not self.locality:
            raise ValueError(
                "decoder.learned_locality=true learns the sharpness of the locality bias, but locality=false "
                "switches that bias off; set locality=true or learned_locality=false"
            )
        # One sharpness per head, exp(0) = 1 at the start: heads can narrow to interpolate between the
        # nearest tokens or widen to read far ones, instead of all sharing the anchors' fixed width.
        self.locality_log_scale = nn.Parameter(torch.zeros(num_heads)) if learned_locality else None

    def _decode(self, points: torch.Tensor, context: torch.Tensor, share_points: bool = False) -> torch.Tensor:
        """``(B, Q, coord_dim)`` and projected latent ``(B, T, dim)`` -> features ``(B, Q, dim)``."""
        if share_points and points.shape[0] > 1 and torch.equal(points[1:], points[:1].expand_as(points[1:])):
            # Every sample asks for the same points (a whole grid in evaluation): the query features and the
            # locality bias depend only on the points, so they are computed once and broadcast over the batch
            # (the same values; about a third of a no-grad grid decode).
            points = points[:1]
        bias = None
        if self.locality:
            anchors, width = anchor_grid(context.shape[1], self.coord_dim, device=points.device)
            bias = locality_bias(points, anchors, width, periodic=self.periodic)
            if self.locality_log_scale is not None:
                bias = bias * self.locality_log_scale.exp().view(1, -1, 1, 1)
        x = self.query_embed(self.query_features(points)).expand(context.shape[0], -1, -1)
        for block in self.blocks:
            x = block(x, context, bias)
        return self.norm(x)

    def forward(
        self, points: torch.Tensor, latent: torch.Tensor, chunk_size: int | None = None, share_points: bool = False
    ) -> dict[str, torch.Tensor]:
        """``share_points``: look for points every sample shares and decode them on the shared path (the same
        values, less work). The look compares the points, which reads a value back from an accelerator, so it
        is off by default and the modules ask for it outside training steps only."""
        check_points_tensor("points", points, self.coord_dim)
        check_points_tensor("latent", latent, self.latent_dim, batch=points.shape[0])
        check_finite("points", points)
        chunk = self.chunk_size if chunk_size is None else check_positive_int("chunk_size", chunk_size)
        context = self.latent_proj(latent)
        if chunk is None or points.shape[1] <= chunk:
            features = self._decode(points, context, share_points)
        else:
            # Heads run per chunk so only (B, chunk, dim) features exist at a time.
            parts = [self._heads(self._decode(part, context, share_points)) for part in points.split(chunk, dim=1)]
            return {name: torch.cat([part[name] for part in parts], dim=1) for name in self.field_channels}
        return self._heads(features)

    def _heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(features) for name, head in zip(self.field_channels, self.heads)}
