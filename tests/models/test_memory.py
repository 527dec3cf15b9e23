"""saved_tensor_bytes counts each storage autograd keeps for backward exactly once."""

from __future__ import annotations

import torch

from upt_lightning.models import saved_tensor_bytes


def test_square_saves_its_input_once():
    x = torch.randn(1000, requires_grad=True)
    assert saved_tensor_bytes(lambda: x * x) == 1000 * 4


def test_product_of_two_tensors_saves_both():
    x = torch.randn(1000, requires_grad=True)
    y = torch.randn(500, 2, dtype=torch.float64, requires_grad=True)
    assert saved_tensor_bytes(lambda: x.view(500, 2) * y) == 1000 * 4 + 1000 * 8


def test_chain_counts_intermediate_results():
    x = torch.randn(1000, requires_grad=True)
    y = torch.randn(1000, requires_grad=True)
    # mul saves x and y; sin saves its input, the (1000,) product.
    assert saved_tensor_bytes(lambda: (x * y).sin()) == 3 * 1000 * 4


def test_nothing_is_saved_without_grad():
    x = torch.randn(1000, requires_grad=True)
    with torch.no_grad():
        assert saved_tensor_bytes(lambda: (x * x).sin()) == 0
    assert saved_tensor_bytes(lambda: torch.randn(1000) * torch.randn(1000)) == 0
