"""UPT supernode-pooling encoder of fields on scattered points (meshes, particles, point subsets)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from upt_lightning.fields import cat_fields, total_channels, validate_field_spec
from upt_lightning.models.anchors import anchor_grid, locality_bias
from upt_lightning.models.blocks import PerceiverPooling, TransformerBlock
from upt_lightning.models.embeddings import SincosEmbedding
from upt_lightning.models.neighbourhoods import choose_supernodes, radius_neighbours
from upt_lightning.models.validation import (
    check_heads,
    check_points_tensor,
    check_positive_int,
    masked_points,
    read_mask,
)


class MeshEncoder(nn.Module):
    """Encode ``N`` scattered points of a padded batch into ``(B, latent_tokens, latent_dim)``.

    Supernode pooling: ``S = num_supernodes`` valid points become supernodes (random in training
    mode, evenly spaced along the input order in eval mode, see ``choose_supernodes``); each
    supernode averages messages ``MLP([embed(field), sincos(pos_src), sincos(pos_dst)])`` from its
    up to ``max_neighbours`` nearest valid points within ``radius`` (itself included). A
    transformer runs over the ``S`` supernode tokens and perceiver pooling reduces them to
    ``latent_tokens`` tokens.

    ``meta`` may hold ``"mask"`` ``(B, N)`` bool (True = real point; padding never changes the
    result) and ``"supernode_idx"`` ``(B, S')`` long to force the supernodes.

    The neighbour search handles as many supernodes at once as keep its ``(B, chunk, N)``
    distance matrix within ``search_budget_mib`` MiB; ``chunk_size`` fixes the count instead.
    Neither changes the result, only time and peak memory.
    """

    accepts_point_subsets = True

    def __init__(
        self,
        field_channels: Mapping[str, int],
        coord_dim: int = 2,
        num_supernodes: int = 256,
        radius: float = 0.1,
        max_neighbours: int = 32,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        latent_tokens: int = 16,
        latent_dim: int = 32,
        mlp_ratio: float = 4.0,
        chunk_size: int | None = None,
        locality: bool = True,
        search_budget_mib: float = 256.0,
    ):
        super().__init__()
        self.field_channels = validate_field_spec(field_channels)
        self.coord_dim = check_positive_int("coord_dim", coord_dim)
        self.num_supernodes = check_positive_int("num_supernodes", num_supernodes)
        if not radius > 0:
            raise ValueError(f"radius must be positive (coordinates are normalised to [0, 1]), got {radius}")
        self.radius = float(radius)
        self.max_neighbours = check_positive_int("max_neighbours", max_neighbours)
        check_heads(dim, num_heads)
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.latent_tokens = latent_tokens
        self.latent_dim = latent_dim
        self.mlp_ratio = mlp_ratio
        if not search_budget_mib > 0:
            raise ValueError(
                f"search_budget_mib must be positive (memory of the neighbour search's distance matrix in MiB), "
                f"got {search_budget_mib}"
            )
        # Private: search settings do not change the latents, so they stay out of the latent cache's
        # fingerprint (which reads the public settings).
        self._chunk_size = None if chunk_size is None else check_positive_int("chunk_size", chunk_size)
        self._search_budget_bytes = int(search_budget_mib * 2**20)

        self.field_embed = nn.Linear(total_channels(self.field_channels), dim)
        self.pos_embed = SincosEmbedding(self.coord_dim, dim)
        # The message MLP's first linear layer, split into the part applied to [field, pos_src]
        # (computed once per point, then gathered) and the part for pos_dst (once per supernode),
        # so the (B, S, k, 3 * dim) concatenation is never built.
        self.message_src = nn.Linear(2 * dim, dim)
        self.message_dst = nn.Linear(dim, dim, bias=False)
        self.message_out = nn.Sequential(nn.GELU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pool = PerceiverPooling(dim, latent_tokens, latent_dim, num_heads, mlp_ratio)
        self.locality = bool(locality)

    def select_supernodes(
        self, coords: torch.Tensor, mask: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``(B, S)`` long indices of supernodes among the valid points of ``coords (B, N, d)``."""
        check_points_tensor("coords", coords, self.coord_dim)
        mask = read_mask(None if mask is None else {"mask": mask}, *coords.shape[:2], coords.device)
        return choose_supernodes(mask, self.num_supernodes, random=self.training, generator=generator)

    def neighbours(
        self, coords: torch.Tensor, supernode_idx: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Neighbour indices ``(B, S, k)`` and their validity ``(B, S, k)`` for each supernode."""
        check_points_tensor("coords", coords, self.coord_dim)
        mask = read_mask(None if mask is None else {"mask": mask}, *coords.shape[:2], coords.device)
        centres = coords.gather(1, supernode_idx.unsqueeze(-1).expand(-1, -1, self.coord_dim))
        return radius_neighbours(
            coords, centres, mask, self.radius, self.max_neighbours, self._chunk_size, self._search_budget_bytes
        )

    def _forced_supernodes(self, supernode_idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, count = mask.shape
        if supernode_idx.ndim != 2 or supernode_idx.shape[0] != batch or supernode_idx.dtype != torch.long:
            raise ValueError(
                f"meta['supernode_idx'] must be a ({batch}, S) long tensor, "
                f"got {tuple(supernode_idx.shape)} {supernode_idx.dtype}"
            )
        supernode_idx = supernode_idx.to(mask.device)
        if supernode_idx.numel() and (int(supernode_idx.min()) < 0 or int(supernode_idx.max()) >= count):
            raise ValueError(f"meta['supernode_idx'] must index the {count} points, i.e. lie in [0, {count})")
        if not mask.gather(1, supernode_idx).all():
            raise ValueError("meta['supernode_idx'] points at padding (mask False); choose valid points only")
        return supernode_idx

    def forward(self, fields, coords: torch.Tensor, meta: Mapping | None = None) -> torch.Tensor:
        x, coords, mask = masked_points(cat_fields(fields, self.field_channels), coords, self.coord_dim, meta)
        batch = x.shape[0]

        forced = None if meta is None else meta.get("supernode_idx")
        supernode_idx = self.select_supernodes(coords, mask) if forced is None else self._forced_supernodes(forced, mask)
        idx, valid = self.neighbours(coords, supernode_idx, mask)
        num_super, k = idx.shape[1:]

        src = self.message_src(torch.cat([self.field_embed(x), self.pos_embed(coords)], dim=-1))
        src = src.gather(1, idx.reshape(batch, num_super * k, 1).expand(-1, -1, self.dim))
        centres = coords.gather(1, supernode_idx.unsqueeze(-1).expand(-1, -1, self.coord_dim))
        dst = self.message_dst(self.pos_embed(centres)).unsqueeze(2)
        messages = self.message_out(src.view(batch, num_super, k, self.dim) + dst)
        messages = messages.masked_fill(~valid.unsqueeze(-1), 0.0)
        # Every supernode is its own neighbour at distance 0, so the count is at least 1.
        tokens = messages.sum(dim=2) / valid.sum(dim=2, keepdim=True)

        for block in self.blocks:
            tokens = block(tokens)
        bias = None
        if self.locality:
            anchors, width = anchor_grid(self.latent_tokens, self.coord_dim, device=centres.device)
            bias = locality_bias(anchors, centres, width)
        return self.pool(self.norm(tokens), bias)
