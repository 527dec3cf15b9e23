"""Evaluation shards under DDP: equal lengths, every real window exactly once, padding marked and dropped."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler

from upt_lightning.data.collate import collate_windows
from upt_lightning.data.even_shards import EvenShards, even_eval_shards
from upt_lightning.modules.evaluation import without_padding


class Windows(torch.utils.data.Dataset):
    def __init__(self, size: int):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return {"fields": torch.full((3, 1), float(index)), "targets": torch.zeros(1, 3, 1),
                "coords": torch.zeros(3, 1), "dt": 0.1, "traj": index, "t0": 0}


def shard_batches(size: int, world: int, batch_size: int = 4):
    padded = EvenShards(Windows(size), world)
    return [list(DataLoader(padded, batch_size=batch_size, collate_fn=collate_windows,
                            sampler=DistributedSampler(padded, num_replicas=world, rank=rank, shuffle=False)))
            for rank in range(world)]


def test_every_window_once_over_the_ranks_and_padding_dropped():
    for size, world in ((7, 2), (1, 2), (5, 4), (8, 2)):
        shards = shard_batches(size, world)
        assert len({sum(len(b["traj"]) for b in batches) for batches in shards}) == 1  # equal shard lengths
        seen = []
        for batches in shards:
            for batch in batches:
                assert batch["padding"].dtype == torch.bool
                kept = without_padding(batch)
                if kept is None:  # a shard of padding only (1 window, 2 ranks)
                    assert batch["padding"].all()
                    continue
                assert "padding" not in kept and len(kept["fields"]) == len(kept["traj"]) == len(kept["dt"])
                assert torch.equal(kept["fields"][:, 0, 0], kept["traj"].float())  # rows stay aligned
                seen += kept["traj"].tolist()
        assert sorted(seen) == list(range(size)), (size, world)


def test_one_process_loaders_are_left_alone():
    dataset = Windows(3)
    assert even_eval_shards(dataset) == (dataset, None)
    batch = collate_windows([dataset[i] for i in range(3)])
    assert "padding" not in batch and without_padding(batch) is batch
