"""Transformer building blocks: pre-LN self-attention, cross-attention and perceiver pooling."""

from __future__ import annotations

import torch
from torch import nn

from upt_lightning.models.attention import Attention, Mlp


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + attn(LN(x))`` then ``x + mlp(LN(x))``; ``(B, N, dim) -> (B, N, dim)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-attention: queries ``(B, Nq, dim)`` attend to ``context (B, Nk, context_dim)``.

    Queries never attend to each other, so every query row is computed independently of the
    others. Returns ``(B, Nq, dim)``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, context_dim: int | None = None):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.context_dim = dim if context_dim is None else context_dim
        self.norm_q = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(self.context_dim)
        self.attn = Attention(dim, num_heads, context_dim=self.context_dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``bias``: optional additive attention logits, broadcastable to ``(B, heads, Nq, Nk)``."""
        x = x + self.attn(self.norm_q(x), self.norm_context(context), bias)
        return x + self.mlp(self.norm_mlp(x))


class PerceiverPooling(nn.Module):
    """Pool any number of tokens ``(B, N, input_dim)`` into ``(B, num_queries, output_dim)``.

    ``num_queries`` learned query tokens cross-attend to the input tokens; a final LayerNorm and
    linear map bring them to ``output_dim``.
    """

    def __init__(self, input_dim: int, num_queries: int, output_dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.input_dim = input_dim
        self.num_queries = num_queries
        self.output_dim = output_dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.queries = nn.Parameter(torch.empty(1, num_queries, input_dim))
        nn.init.trunc_normal_(self.queries, std=0.02)
        self.block = CrossAttentionBlock(input_dim, num_heads, mlp_ratio)
        self.norm = nn.LayerNorm(input_dim)
        self.out = nn.Linear(input_dim, output_dim)

    def forward(self, tokens: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``bias``: optional additive logits ``(B or 1, 1, num_queries, N)`` (see models.anchors)."""
        queries = self.queries.expand(tokens.shape[0], -1, -1)
        return self.out(self.norm(self.block(queries, tokens, bias)))
