"""Tiny frozen GridEncoder / MeshEncoder / AnyPointDecoder and their inputs, for the inverse-loss tests."""

from __future__ import annotations

import torch
from torch import nn

from upt_lightning.models import AnyPointDecoder, GridEncoder, MeshEncoder

SPEC = {"u": 1, "v": 1}
LATENT_DIM = 8


def frozen(module: nn.Module) -> nn.Module:
    return module.requires_grad_(False).eval()


def tiny_decoder() -> nn.Module:
    return frozen(AnyPointDecoder(SPEC, coord_dim=2, latent_dim=LATENT_DIM, dim=16, depth=1, num_heads=2,
                                  num_frequencies=3))


def grid_case():
    """GridEncoder on an 8x8 grid (patch 4); coords (2, 64, 2), fields {u, v} (2, 64, 1), meta."""
    encoder = frozen(GridEncoder(SPEC, (8, 8), patch_size=4, dim=16, depth=1, num_heads=2, latent_tokens=4,
                                 latent_dim=LATENT_DIM))
    axis = (torch.arange(8.0) + 0.5) / 8
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(1, 64, 2).expand(2, -1, -1)
    fields = {"u": torch.sin(6 * coords[..., :1]), "v": torch.cos(6 * coords[..., 1:])}
    return encoder, coords, fields, {"grid_shape": (8, 8)}


def mesh_encoder(num_supernodes: int = 8) -> nn.Module:
    return frozen(MeshEncoder(SPEC, coord_dim=2, num_supernodes=num_supernodes, radius=0.4, max_neighbours=8,
                              dim=16, depth=1, num_heads=2, latent_tokens=4, latent_dim=LATENT_DIM))


def mesh_case(points: int = 100):
    coords = torch.rand(2, points, 2, generator=torch.Generator().manual_seed(0))
    fields = {"u": torch.sin(6 * coords[..., :1]), "v": torch.cos(6 * coords[..., 1:])}
    return mesh_encoder(), coords, fields, {}
