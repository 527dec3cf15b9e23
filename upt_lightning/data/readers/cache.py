"""A least-recently-used store of tensors with a byte budget, for per-trajectory metadata.

Every window of a trajectory needs the same coordinates ``(N, d)`` and times ``(T,)``; reading
and checking them again for each item cost more than reading the item's frames. Readers keep
them here instead. The budget bounds the memory, so it does not grow with the file size (a file
with many meshes just re-reads the least recently used ones).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch


class TensorLRU:
    """At most ``max_bytes`` of tensors, the least recently used evicted first.

    A tensor larger than the whole budget is returned without being stored.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self._items: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The tensor stored under ``key``, made by ``make()`` and stored on a miss."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        size = value.numel() * value.element_size()
        if size <= self.max_bytes:
            self._items[key] = value
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.numel() * old.element_size()
        return value

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0
