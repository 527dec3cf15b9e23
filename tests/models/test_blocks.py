"""Attention against torch.nn.MultiheadAttention; perceiver pooling is a set function."""

from __future__ import annotations

import pytest
import torch

from upt_lightning.models.attention import Attention
from upt_lightning.models.blocks import CrossAttentionBlock, PerceiverPooling


def test_cross_attention_equals_torch_multihead_attention():
    attention = Attention(dim=8, num_heads=2, context_dim=6)
    reference = torch.nn.MultiheadAttention(8, 2, kdim=6, vdim=6, batch_first=True)
    with torch.no_grad():
        w_k, w_v = attention.kv.weight.chunk(2)
        b_k, b_v = attention.kv.bias.chunk(2)
        reference.q_proj_weight.copy_(attention.q.weight)
        reference.k_proj_weight.copy_(w_k)
        reference.v_proj_weight.copy_(w_v)
        reference.in_proj_bias.copy_(torch.cat([attention.q.bias, b_k, b_v]))
        reference.out_proj.weight.copy_(attention.proj.weight)
        reference.out_proj.bias.copy_(attention.proj.bias)
    x, context = torch.randn(3, 7, 8), torch.randn(3, 4, 6)
    expected, _ = reference(x, context, context, need_weights=False)
    torch.testing.assert_close(attention(x, context), expected, rtol=1e-5, atol=1e-5)


def test_cross_attention_rows_are_independent_of_other_queries():
    block = CrossAttentionBlock(dim=8, num_heads=2)
    x, context = torch.randn(2, 9, 8), torch.randn(2, 4, 8)
    torch.testing.assert_close(block(x[:, 3:5], context), block(x, context)[:, 3:5], rtol=0, atol=1e-6)


def test_perceiver_pooling_ignores_token_order():
    pooling = PerceiverPooling(input_dim=8, num_queries=3, output_dim=5, num_heads=2)
    tokens = torch.randn(2, 11, 8)
    pooled = pooling(tokens)
    assert pooled.shape == (2, 3, 5)
    torch.testing.assert_close(pooling(tokens[:, torch.randperm(11)]), pooled, rtol=0, atol=1e-5)


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match="dim=10 is not divisible by num_heads=4"):
        Attention(dim=10, num_heads=4)
