"""Encoder of fields on a regular 1D/2D/3D grid into a fixed number of latent tokens."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from upt_lightning.fields import cat_fields, total_channels, validate_field_spec
from upt_lightning.models.anchors import anchor_grid, locality_bias
from upt_lightning.models.blocks import PerceiverPooling, TransformerBlock
from upt_lightning.models.embeddings import SincosEmbedding
from upt_lightning.models.validation import check_finite, check_heads, check_points_tensor, check_positive_int


POOLINGS = ("perceiver", "patch")


def _check_patch_tokens(latent_tokens: int, patches_per_axis: tuple[int, ...], centres: torch.Tensor) -> None:
    """One token per patch: the token count is the patch count, and the patch centres must be the
    anchors the decoder assumes for that many tokens (a regular grid, ``anchor_grid``)."""
    num_patches = math.prod(patches_per_axis)
    if latent_tokens != num_patches:
        raise ValueError(
            f"grid_encoder.pooling='patch' keeps one latent token per patch, so latent_tokens must be "
            f"{num_patches} (patches per axis {patches_per_axis}), got {latent_tokens}; set "
            f"latent_tokens={num_patches}, change patch_size, or use pooling='perceiver'"
        )
    anchors, _ = anchor_grid(num_patches, len(patches_per_axis))
    if anchors.shape != centres.shape or not torch.allclose(anchors, centres.to(anchors.dtype), atol=1e-6):
        raise ValueError(
            f"grid_encoder.pooling='patch' needs patches that tile the grid like the decoder's token anchors "
            f"({tuple(sorted(patches_per_axis, reverse=True))} patches per axis, largest first), got "
            f"{patches_per_axis}; pick a patch_size that gives that layout, or use pooling='perceiver'"
        )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _meta_grid_shape(value) -> tuple[int, ...]:
    """``meta['grid_shape']`` as a tuple; accepts ints, a ``(d,)``/``(B, d)`` tensor or a collated list."""
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)  # what the modules pass: plain ints, read without building a tensor
    if isinstance(value, torch.Tensor):
        rows = value.reshape(-1, value.shape[-1]) if value.ndim else value.reshape(1, 1)
    else:
        # default_collate turns a per-sample tuple of ints into a list of (B,) tensors, one per axis.
        rows = torch.stack([torch.as_tensor(v).reshape(-1) for v in value], dim=-1)
    if not (rows == rows[0]).all():
        raise ValueError(f"meta['grid_shape'] differs between samples of the batch: {rows.tolist()}")
    return tuple(int(v) for v in rows[0])


class GridEncoder(nn.Module):
    """Patchify a regular grid, run a transformer over the patches, pool to latent tokens.

    Input fields ``{name: (B, N, C_f)}`` or ``(B, N, C)`` with ``N = prod(grid_shape)`` points in
    row-major (C) order. Output ``(B, latent_tokens, latent_dim)``.

    ``pooling`` decides how the patch tokens become latent tokens: ``"perceiver"`` pools them into
    ``latent_tokens`` learned queries (any count); ``"patch"`` keeps one latent token per patch
    (``latent_tokens`` must equal the number of patches), projected to ``latent_dim``. Each patch
    token then sits at its own anchor, the patch centre, so the decoder's locality bias points every
    query at the tokens that saw its neighbourhood. On the default 2D Burgers data one token per
    patch halved the stage-1 reconstruction error for the same steps (docs/accuracy.md).
    """

    accepts_point_subsets = False

    def __init__(
        self,
        field_channels: Mapping[str, int],
        grid_shape: Sequence[int],
        patch_size: int | Sequence[int] = 4,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        latent_tokens: int = 16,
        latent_dim: int = 32,
        mlp_ratio: float = 4.0,
        locality: bool = True,
        pooling: str = "perceiver",
    ):
        super().__init__()
        self.field_channels = validate_field_spec(field_channels)
        self.grid_shape = tuple(check_positive_int("grid_shape entries", g) for g in grid_shape)
        if not self.grid_shape:
            raise ValueError("grid_shape is empty; give the points per axis, e.g. (1024,) or (64, 64)")
        ndim = len(self.grid_shape)
        if isinstance(patch_size, int):
            patch_size = (patch_size,) * ndim
        self.patch_size = tuple(check_positive_int("patch_size entries", p) for p in patch_size)
        if len(self.patch_size) != ndim:
            raise ValueError(f"patch_size {self.patch_size} has {len(self.patch_size)} entries, grid_shape {ndim}")
        for axis, (size, patch) in enumerate(zip(self.grid_shape, self.patch_size)):
            if size % patch:
                raise ValueError(
                    f"patch_size {patch} does not divide grid axis {axis} of size {size}; "
                    f"use one of its divisors {_divisors(size)}"
                )
        check_heads(dim, num_heads)
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.latent_tokens = latent_tokens
        self.latent_dim = latent_dim
        self.mlp_ratio = mlp_ratio
        self.num_points = math.prod(self.grid_shape)
        self.patches_per_axis = tuple(g // p for g, p in zip(self.grid_shape, self.patch_size))
        self.num_patches = math.prod(self.patches_per_axis)
        in_channels = total_channels(self.field_channels)

        self.patch_embed = nn.Linear(math.prod(self.patch_size) * in_channels, dim)
        centres = torch.meshgrid(*[(torch.arange(n) + 0.5) / n for n in self.patches_per_axis], indexing="ij")
        centres = torch.stack(centres, dim=-1).reshape(self.num_patches, ndim)
        self.register_buffer("pos_embed", SincosEmbedding(ndim, dim)(centres).unsqueeze(0), persistent=False)
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        if pooling not in POOLINGS:
            raise ValueError(f"grid_encoder.pooling={pooling!r} is unknown; choose one of {POOLINGS}")
        self.pooling = pooling
        self.locality = bool(locality)
        if pooling == "patch":
            _check_patch_tokens(latent_tokens, self.patches_per_axis, centres)
            self.pool = nn.Linear(dim, latent_dim)
            self.pool_bias = None
        else:
            self.pool = PerceiverPooling(dim, latent_tokens, latent_dim, num_heads, mlp_ratio)
        if self.locality and pooling == "perceiver":
            anchors, width = anchor_grid(latent_tokens, ndim)
            self.register_buffer("pool_bias", locality_bias(anchors, centres, width), persistent=False)
        else:
            self.pool_bias = None

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` in row-major grid order -> ``(B, num_patches, prod(patch_size) * C)``."""
        batch, ndim = x.shape[0], len(self.grid_shape)
        split = [v for n, p in zip(self.patches_per_axis, self.patch_size) for v in (n, p)]
        x = x.reshape(batch, *split, x.shape[-1])
        # Bring the patch-count axes first and the within-patch axes (plus channels) last.
        order = [0, *range(1, 2 * ndim, 2), *range(2, 2 * ndim + 1, 2), 2 * ndim + 1]
        return x.permute(order).reshape(batch, self.num_patches, -1)

    def forward(self, fields, coords: torch.Tensor | None = None, meta: Mapping | None = None) -> torch.Tensor:
        x = cat_fields(fields, self.field_channels)
        check_points_tensor("fields", x, x.shape[-1])
        if x.shape[1] != self.num_points:
            raise ValueError(
                f"fields have {x.shape[1]} points but grid_shape {self.grid_shape} has {self.num_points}; "
                "GridEncoder needs the full grid in row-major order (use MeshEncoder for point subsets)"
            )
        if coords is not None:
            check_points_tensor("coords", coords, len(self.grid_shape), batch=x.shape[0], count=self.num_points)
        if meta is not None and meta.get("grid_shape") is not None:
            given = _meta_grid_shape(meta["grid_shape"])
            if given != self.grid_shape:
                raise ValueError(
                    f"meta['grid_shape'] is {given} but this GridEncoder was built for {self.grid_shape}; "
                    "build the encoder with the data's grid_shape"
                )
        check_finite("fields", x)
        tokens = self.patch_embed(self.patchify(x)) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        if self.pooling == "patch":
            return self.pool(self.norm(tokens))
        return self.pool(self.norm(tokens), self.pool_bias)
