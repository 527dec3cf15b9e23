"""DiT-style transformer block whose LayerNorms are modulated by a conditioning vector (adaLN-Zero)."""

from __future__ import annotations

import torch
from torch import nn

from upt_lightning.models.attention import Attention, Mlp


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x (B, N, dim)`` shifted and scaled per sample by ``shift, scale (B, dim)``."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class ModulatedBlock(nn.Module):
    """Pre-LN self-attention + MLP with shift/scale/gate from ``cond (B, dim)``; ``(B, N, dim)``.

    The modulation layer starts at zero, so the gates are zero and a fresh block is the identity.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond).chunk(6, dim=-1)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift2, scale2))


class ModulatedOutput(nn.Module):
    """Final adaLN LayerNorm and linear map ``(B, N, dim) -> (B, N, out_dim)``, zero at start."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.dim = dim
        self.out_dim = out_dim
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)
        for layer in (self.modulation[1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(cond).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))
