"""Query-sampling generators: reproducible, and a new draw for every batch (accumulation micro-batches too)."""

from __future__ import annotations

import lightning.pytorch as pl

from helpers.modules import loader, make_trainer, tiny_autoencoder
from upt_lightning.modules.seeding import mix_seed


class GeneratorSeeds(pl.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.append((trainer.global_step, module.query_generator().initial_seed()))


def seeds_of_a_fit(seed: int) -> list[tuple[int, int]]:
    record = GeneratorSeeds()
    trainer = make_trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0, accumulate_grad_batches=2,
                           callbacks=[record])
    trainer.fit(tiny_autoencoder(sampling={"num_queries": 32}, seed=seed), train_dataloaders=loader())
    return record.seen


def test_every_batch_draws_anew_and_the_same_seed_repeats_the_draws():
    seen = seeds_of_a_fit(seed=0)
    assert [step for step, _ in seen] == [0, 0, 1, 1]  # micro-batches of one optimizer step share global_step
    assert len({generator_seed for _, generator_seed in seen}) == 4  # ... but not their query draws
    assert seeds_of_a_fit(seed=0) == seen
    assert not {s for _, s in seeds_of_a_fit(seed=1)} & {s for _, s in seen}


def test_mixed_seeds_do_not_collide_along_rank_and_batch():
    # A linear formula seed * P + rank * Q + batch repeats rank 0's draws on rank 1, Q batches later.
    seeds = {mix_seed(seed, rank, batch) for seed in range(3) for rank in range(4) for batch in range(10_000)}
    assert len(seeds) == 3 * 4 * 10_000
    assert all(0 <= s < 2**63 for s in seeds)
