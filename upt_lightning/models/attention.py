"""Multi-head attention through ``scaled_dot_product_attention`` and the feed-forward MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from upt_lightning.models.validation import check_heads


class Attention(nn.Module):
    """Multi-head attention of queries ``(B, Nq, dim)`` to a context ``(B, Nk, context_dim)``.

    Without a context it is self-attention. Returns ``(B, Nq, dim)``. Attention goes through
    ``scaled_dot_product_attention`` so that PyTorch picks a fused kernel for the device.
    """

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None):
        super().__init__()
        check_heads(dim, num_heads)
        self.dim = dim
        self.num_heads = num_heads
        self.context_dim = dim if context_dim is None else context_dim
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(self.context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.num_heads, self.dim // self.num_heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``bias``: optional additive logits broadcastable to ``(B, heads, Nq, Nk)``."""
        context = x if context is None else context
        key, value = self.kv(context).chunk(2, dim=-1)
        if bias is not None:
            bias = bias.to(x.dtype)
        out = F.scaled_dot_product_attention(
            self._heads(self.q(x)), self._heads(key), self._heads(value), attn_mask=bias
        )
        return self.proj(out.transpose(1, 2).flatten(2))


class Mlp(nn.Module):
    """Two-layer feed-forward network ``dim -> hidden_dim -> out_dim`` with GELU; ``(..., dim)``."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None):
        super().__init__()
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.out_dim = dim if out_dim is None else out_dim
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, self.out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
