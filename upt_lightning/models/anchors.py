"""Anchor positions of latent tokens and the locality bias of attention between positions.

Perceiver pooling and the perceiver decoder attend almost uniformly at initialisation, and a
uniform average of normalised (zero-mean) fields carries no information: encoder and decoder then
sit on a long plateau where they predict the mean field. Giving every latent token an anchor
position on a regular grid of [0, 1]^d and adding ``-|x_q - x_k|^2 / (2 width^2)`` to the attention
logits makes each latent token start as a local summary and each query start by reading the
tokens near it, so information flows from the first step; the logits stay free to learn any
other pattern on top of the bias.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def anchor_factors(num_tokens: int, coord_dim: int) -> tuple[int, ...]:
    """Split ``num_tokens`` into ``coord_dim`` factors as equal as possible (largest first)."""
    factors = []
    remaining = num_tokens
    for axes_left in range(coord_dim, 0, -1):
        target = round(remaining ** (1.0 / axes_left))
        best = max(d for d in range(1, remaining + 1) if remaining % d == 0 and d <= max(target, 1))
        factors.append(best)
        remaining //= best
    factors[0] *= remaining
    return tuple(sorted(factors, reverse=True))


def cell_centred_grid(sizes) -> torch.Tensor:
    """Cell-centred points ``(*sizes, d)`` of a regular grid on [0, 1]^d, ``(i + 0.5) / n`` along each axis."""
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n for n in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def _make_anchor_grid(num_tokens: int, coord_dim: int) -> tuple[torch.Tensor, float]:
    factors = anchor_factors(num_tokens, coord_dim)
    return cell_centred_grid(factors).reshape(num_tokens, coord_dim), 1.0 / min(factors)


_anchor_grid_cpu = lru_cache(maxsize=32)(_make_anchor_grid)


def anchor_grid(num_tokens: int, coord_dim: int, device=None) -> tuple[torch.Tensor, float]:
    """Cell-centred anchors ``(T, d)`` of T latent tokens in [0, 1]^d (row-major) and their widest spacing."""
    # torch.compile traces the grid into its graph once; the cache serves eager calls only (dynamo would
    # trace through lru_cache anyway, and warn that it ignores the cache).
    make = _make_anchor_grid if torch.compiler.is_compiling() else _anchor_grid_cpu
    grid, spacing = make(int(num_tokens), int(coord_dim))
    return grid.to(device), spacing


def locality_bias(
    query_pos: torch.Tensor, key_pos: torch.Tensor, width: float, periodic: bool = False
) -> torch.Tensor:
    """Additive attention bias ``-|q - k|^2 / (2 width^2)``.

    query_pos (Q, d) or (B, Q, d); key_pos (K, d) or (B, K, d). Returns (1 or B, 1, Q, K), which
    broadcasts over heads in ``scaled_dot_product_attention``. ``periodic``: positions live on the
    unit torus, and each offset is taken to its nearest periodic image (a query at x = 0.01 is then
    next to the token at x = 0.99, not a whole domain away from it).
    """
    if query_pos.ndim == 2:
        query_pos = query_pos.unsqueeze(0)
    if key_pos.ndim == 2:
        key_pos = key_pos.unsqueeze(0)
    offset = query_pos.unsqueeze(2) - key_pos.unsqueeze(1)
    if periodic:
        offset = offset - offset.round()
    squared = offset.pow(2).sum(-1)
    return (squared * (-0.5 / (width * width))).unsqueeze(1)


def check_width(width: float) -> float:
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise ValueError(f"locality width must be a positive number, got {width!r}")
    return float(width)
