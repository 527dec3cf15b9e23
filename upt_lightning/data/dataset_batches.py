"""Training batches that each come from one of several datasets: the sampler, the view and the collate.

:class:`DatasetBatchSampler` yields lists of indices into a :class:`ConcatWindows` view of the datasets'
windows; each list lies inside one dataset, drawn per batch by weight. It is handed to the DataLoader
as ``sampler`` with ``batch_size=None``, so every list reaches ``ConcatWindows[list]`` whole, which
returns ``(dataset index, windows)``, and :class:`OneDatasetCollate` turns that into the dataset's
batch plus a ``dataset`` key.

Why a ``sampler`` subclassing DistributedSampler rather than a ``batch_sampler``: under DDP with
``use_distributed_sampler=True`` (the Trainer default), Lightning 2.6 replaces the sampler of every
training loader whose ``loader.sampler`` is not a DistributedSampler
(``_DataConnector._requires_distributed_sampler``). A loader built with ``batch_sampler=`` has a
SequentialSampler there, so Lightning builds ``DistributedSampler(dataset)`` and re-instantiates the
batch sampler with it as its ``sampler`` argument (``_dataloader_init_kwargs_resolve_sampler``), or
raises TypeError when the class takes none: per-rank index shards would then break the "one dataset
per batch, the same dataset on every rank" rule. A DistributedSampler is kept as it is. Lightning also
calls ``set_epoch(epoch)`` at every epoch start on ``loader.sampler`` and on
``loader.batch_sampler.sampler``, never on ``loader.batch_sampler`` itself
(``lightning.fabric.utilities.data._set_sampler_epoch``); as ``loader.sampler`` this sampler gets it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DistributedSampler


def _world() -> tuple[int, int]:
    """(world size, rank) of the running process group; (1, 0) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class DatasetBatchSampler(DistributedSampler):
    """Yields ``num_batches`` lists of ``batch_size`` indices into the concatenation of datasets of ``sizes``.

    Per batch a dataset is drawn with probability proportional to ``weights`` (default: ``sizes``, the
    datasets' window counts). Within a dataset, windows come in the order of a shuffled permutation,
    and a fresh permutation follows when one is used up, so every window is seen once per pass
    before any repeats; every batch is full.

    All draws come from one generator seeded with ``seed + epoch`` (:meth:`set_epoch`), and none
    depends on the rank: under DDP every rank draws the same dataset sequence and permutations, so the
    k-th batch of every rank comes from the same dataset. Of each ``batch_size * num_replicas``
    consecutive positions of a dataset's permutation, rank ``r`` takes block ``r``, so the ranks do not
    repeat each other's windows within a pass. The same seed and epoch give the same batches, which is
    what a resumed run relies on (Lightning calls ``set_epoch`` with the restored epoch).

    ``num_batches`` (per rank and epoch) defaults to ``sum(ceil(size / (batch_size * num_replicas)))``:
    about one pass over each dataset under proportional mixing. ``num_replicas`` and ``rank`` default
    to those of the initialised process group (1 and 0 without one); tests pass them explicitly.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        weights: Sequence[float] | None = None,
        seed: int = 0,
        num_batches: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        sizes = [int(size) for size in sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"sizes must be at least one dataset size, each >= 1, got {sizes}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        weights = list(sizes if weights is None else weights)
        if len(weights) != len(sizes) or not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"weights must be {len(sizes)} finite numbers > 0, got {weights}")
        world, own_rank = _world()
        num_replicas = world if num_replicas is None else int(num_replicas)
        rank = own_rank if rank is None else int(rank)
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be at least 1, got {num_replicas}")
        # The base class checks the rank and sets num_replicas, rank, seed, epoch (and set_epoch); its
        # "dataset" only needs a length.
        super().__init__(range(sum(sizes)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=int(seed))
        self.sizes = sizes
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.batch_size = int(batch_size)
        self.weights = torch.tensor(weights, dtype=torch.float64)
        if num_batches is None:
            num_batches = sum(math.ceil(size / (self.batch_size * num_replicas)) for size in sizes)
        if num_batches < 1:
            raise ValueError(f"num_batches must be None or at least 1, got {num_batches}")
        self.num_batches = int(num_batches)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.multinomial(self.weights, self.num_batches, replacement=True, generator=generator)
        streams = [_PermutationCycle(size, generator) for size in self.sizes]
        first = self.rank * self.batch_size
        for dataset in order.tolist():
            # Every rank takes the whole block, so the generator advances alike on all ranks.
            block = streams[dataset].take(self.batch_size * self.num_replicas)
            offset = self.offsets[dataset]
            yield [offset + index for index in block[first : first + self.batch_size]]


class _PermutationCycle:
    """Indices ``0..size-1`` in shuffled passes: a new permutation from ``generator`` when one runs out."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size = size
        self.generator = generator
        self.order: list[int] = []
        self.position = 0

    def take(self, count: int) -> list[int]:
        out: list[int] = []
        while len(out) < count:
            if self.position == len(self.order):
                # Drawn only when needed, in batch order: the same draws on every rank.
                self.order = torch.randperm(self.size, generator=self.generator).tolist()
                self.position = 0
            end = min(len(self.order), self.position + count - len(out))
            out.extend(self.order[self.position : end])
            self.position = end
        return out


class ConcatWindows(ConcatDataset):
    """The datasets' windows end to end; indexed by a list of indices (one batch), it returns them whole.

    ``view[i]`` is window ``i`` as in ConcatDataset. ``view[[i, j, ...]]`` (a batch from
    :class:`DatasetBatchSampler`) is ``(dataset index, [window, ...])``; the indices must lie in one
    dataset.
    """

    def __getitem__(self, index):
        if not isinstance(index, Sequence):
            return super().__getitem__(index)
        indices = [int(i) for i in index]
        if not indices:
            raise ValueError("an empty batch of indices")
        dataset = bisect.bisect_right(self.cumulative_sizes, indices[0])
        start = self.cumulative_sizes[dataset - 1] if dataset > 0 else 0
        end = self.cumulative_sizes[dataset] if dataset < len(self.cumulative_sizes) else start
        if not all(start <= i < end for i in indices):
            raise IndexError(
                f"batch indices {indices} are not all in dataset {dataset} (indices {start}..{end - 1}); "
                "a batch must come from one dataset"
            )
        return dataset, [self.datasets[dataset][i - start] for i in indices]


def add_dataset_index(batch: dict[str, torch.Tensor], index: int, size: int) -> dict[str, torch.Tensor]:
    """``batch`` with ``dataset`` (B,) int64, all ``index``, added."""
    batch["dataset"] = torch.full((size,), int(index), dtype=torch.int64)
    return batch


class OneDatasetCollate:
    """Collate of the training loader: ``(dataset index d, windows)`` -> ``collate_fns[d](windows)`` plus
    ``dataset`` (B,) int64. A class, not a closure, so loader workers can pickle it."""

    def __init__(self, collate_fns: Sequence[Callable]) -> None:
        self.collate_fns = list(collate_fns)

    def __call__(self, sample: tuple[int, list[dict]]) -> dict[str, torch.Tensor]:
        dataset, items = sample
        return add_dataset_index(self.collate_fns[dataset](items), dataset, len(items))


class WithDatasetIndex:
    """``collate_fn`` whose batches also carry ``dataset`` (B,) int64 = ``index``; picklable."""

    def __init__(self, collate_fn: Callable, index: int) -> None:
        self.collate_fn = collate_fn
        self.index = int(index)

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        return add_dataset_index(self.collate_fn(items), self.index, len(items))
