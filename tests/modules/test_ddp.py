"""DDP on 2 CPU processes (ddp_spawn, gloo) against 1 process: same weights, different query draws per rank.

Lightning gives each rank of a fit a DistributedSampler that always shuffles (training loaders, whatever their
``shuffle``): one permutation P of the items from seed PL_GLOBAL_SEED + epoch, of which rank r takes P[r],
P[r + 2], P[r + 4], ... So with a per-rank batch of B/2 the two ranks' i-th batches together hold P[i*B] ..
P[i*B + B - 1], the i-th batch of one process reading P in order with batch B (a DistributedSampler with one
replica draws the same P). Each rank's loss is a mean over its B/2 items and DDP averages the gradients: the
gradient of the mean over all B items.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from helpers.modules import WindowDataset, make_trainer, tiny_autoencoder, travelling_waves
from upt_lightning.query_sampling import sample_uniform_queries

BATCH = 8  # global batch; 24 windows = 3 optimizer steps


class QueryDraws(pl.Callback):
    """Saves, per rank and batch, the query indices the module's generator draws (64 points, 16 queries)."""

    def __init__(self, out: Path):
        self.out = out

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        draws = sample_uniform_queries(64, 16, generator=module.query_generator(), batch_size=4)
        items = batch["traj"] * 6 + batch["t0"]  # WindowDataset index: 6 windows per trajectory
        torch.save({"draws": draws, "items": items},
                   self.out / f"rank{trainer.global_rank}_batch{batch_idx}.pt")


def the_permutation(dataset) -> DistributedSampler:
    """The order the two DDP ranks read together: Lightning's sampler seed (0 here), epoch 0, one replica."""
    return DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0)


def fit(model, devices: int, callbacks=()):
    dataset = WindowDataset(travelling_waves(4, 7))
    # One process: the permutation in order. Two: Lightning replaces the sampler with its shuffling one.
    sampler = the_permutation(dataset) if devices == 1 else None
    loader = DataLoader(dataset, batch_size=BATCH // devices, sampler=sampler, shuffle=False)
    strategy = "ddp_spawn" if devices > 1 else "auto"
    trainer = make_trainer(max_epochs=1, limit_val_batches=0, devices=devices, strategy=strategy,
                           gradient_clip_val=1.0, callbacks=list(callbacks))
    trainer.fit(model, train_dataloaders=loader)
    assert devices > 1 or trainer.global_step == 3  # (ddp_spawn returns weights and metrics, not loop state)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.slow
def test_two_processes_with_half_batches_reach_the_weights_of_one_process(tmp_path):
    pl.seed_everything(0)  # also sets PL_GLOBAL_SEED=0, the seed of Lightning's DistributedSampler
    # Dense losses (sampling.num_queries=None): no sampling, so only the data split can differ between the runs.
    start = tiny_autoencoder(sampling={"num_queries": None}, lambda_cycle=0.1)
    initial = {name: p.detach().clone() for name, p in start.named_parameters()}
    one = tiny_autoencoder(sampling={"num_queries": None}, lambda_cycle=0.1)
    one.load_state_dict(start.state_dict())
    single = fit(one, devices=1)
    two = tiny_autoencoder(sampling={"num_queries": None}, lambda_cycle=0.1)
    two.load_state_dict(start.state_dict())
    distributed = fit(two, devices=2, callbacks=[QueryDraws(tmp_path)])  # rank 0's weights come back

    flat = {name: torch.cat([w.reshape(-1) for w in weights.values()])
            for name, weights in (("initial", initial), ("one", single), ("two", distributed))}
    step, diff = flat["one"] - flat["initial"], flat["two"] - flat["one"]
    assert step.abs().max() > 1e-3  # three AdamW steps at lr <= 1e-3 move the weights
    # Measured: relative 7e-5, largest 8e-6. Not 1e-7: AdamW's first steps divide by |grad|, which amplifies
    # the all-reduce's rounding where a gradient is tiny. A wrong data split gives a relative difference ~1.
    assert diff.norm() < 1e-3 * step.norm(), f"DDP weights differ by {diff.norm() / step.norm():.2e} of the step"
    assert diff.abs().max() < 1e-4

    # With sampling, each rank draws its own queries: different indices on the two ranks, every batch.
    for batch in range(3):
        rank0, rank1 = (torch.load(tmp_path / f"rank{r}_batch{batch}.pt") for r in (0, 1))
        assert not torch.equal(rank0["draws"], rank1["draws"])
        # The sampler's split: together the ranks hold exactly the single process's batch.
        order = list(the_permutation(range(24)))
        assert sorted(rank0["items"].tolist() + rank1["items"].tolist()) == sorted(order[8 * batch: 8 * batch + 8])
    assert len(list(tmp_path.glob("rank*_batch*.pt"))) == 6  # 2 ranks x 3 steps
    assert not torch.equal(torch.load(tmp_path / "rank0_batch0.pt")["draws"],
                           torch.load(tmp_path / "rank0_batch1.pt")["draws"])
