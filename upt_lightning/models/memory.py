"""Measure the memory autograd keeps for the backward pass."""

from __future__ import annotations

from collections.abc import Callable

import torch


def saved_tensor_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs.

    Every tensor handed to ``save_for_backward`` passes the pack hook; tensors that share a
    storage (``x * x`` saves ``x`` twice, views save their base) count once, with the storage's
    full size. Parameters saved by a layer count too. Under ``torch.no_grad`` nothing is saved
    and the result is 0.
    """
    # Holding the storages until the end keeps a freed one's address from being reused and
    # mistaken for an already counted storage.
    storages: dict[tuple[torch.device, int], torch.UntypedStorage] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[(tensor.device, storage.data_ptr())] = storage
        # A detached alias: returning the tensor itself can form a reference cycle through its
        # grad_fn that keeps the whole graph alive when backward never runs (PyTorch #115255).
        return tensor.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storage.nbytes() for storage in storages.values())
