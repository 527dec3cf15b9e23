"""Evaluation splits on several processes: equal shards whose padding is marked, so metrics skip it.

Lightning's DistributedSampler pads a split to a multiple of the world size with real repeats, which the
synced metrics then count twice (a 7-window split on 2 ranks counts its first window twice). Without
padding the shards differ in length, and a rank may get none at all (one rollout window per trajectory,
fewer trajectories than ranks), which Lightning and DDP do not allow. Here the split is padded with copies of
item 0 flagged ``padding=True``; the modules' evaluation drops those rows (see
:func:`upt_lightning.modules.evaluation.without_padding`).
"""

from __future__ import annotations

import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


def eval_world_size() -> int:
    """Number of processes of the running DDP job (1 outside one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class EvenShards(Dataset):
    """``dataset`` padded to a multiple of ``num_replicas`` items; every item gains ``padding`` (bool)."""

    def __init__(self, dataset, num_replicas: int):
        self.dataset = dataset
        self.size = len(dataset)
        self.num_replicas = int(num_replicas)

    def __len__(self) -> int:
        return -(-self.size // self.num_replicas) * self.num_replicas

    def __getitem__(self, index: int) -> dict:
        padding = index >= self.size
        item = dict(self.dataset[0 if padding else index])
        item["padding"] = padding
        return item


def even_eval_shards(dataset) -> tuple[Dataset, DistributedSampler | None]:
    """(dataset, sampler) of an evaluation loader: unchanged on one process, padded and marked on several.

    The sampler is a DistributedSampler without shuffling, so Lightning keeps it rather than putting its
    own (repeating) one in place; rank r reads items r, r + W, r + 2W, ...
    """
    world = eval_world_size()
    if world == 1:
        return dataset, None
    padded = EvenShards(dataset, world)
    return padded, DistributedSampler(padded, num_replicas=world, rank=dist.get_rank(), shuffle=False)
