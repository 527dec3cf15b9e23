"""Benchmark ``throughput``: training samples per second of both stages of the default experiment.

The config is ``train.yaml`` with ``+experiment=burgers_upt``, composed by Hydra; the data set is
generated into ``<out>/work`` (fewer trajectories than the experiment's, same grid and steps).
Lightning fits each stage for a few warm-up and measured batches; a callback separates the time
inside a training step (forward, backward, optimiser) from the time between steps (the data
loader plus Lightning's loop). Stage 2 runs with the inverse losses at their base weights (the
curriculum's steady state) and off (its warm-up epochs), each with latents encoded on the fly
and read from a :class:`~upt_lightning.data.latent_cache.LatentCache` that the DataModule serves
(as ``stage2.latent_cache=true`` does). With the inverse losses off no loss term reads the fields,
so the cache's items leave them out (nothing is read from the file); a last run keeps them, to
separate the two gains.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from upt_lightning.bench.options import BenchOptions
from upt_lightning.bench.presets import CONF_DIR
from upt_lightning.bench.report import BenchResult, Column, Target
from upt_lightning.bench.timing import synchronize
from upt_lightning.data.datamodules import GridDataModule
from upt_lightning.data.latent_cache import LatentCache
from upt_lightning.pipeline.data_settings import datamodule_settings
from upt_lightning.pipeline.stage1 import build_autoencoder
from upt_lightning.pipeline.stage2 import build_operator_module

QUICK = {"overrides": ["model=tiny", "data.batch_size=4", "data.rollout_horizon=2", "sampling.num_queries=512",
                       "++data.generate_options.resolution=32", "++data.generate_options.num=6",
                       "++data.generate_options.num_steps=6", "++data.generate_options.progress=false"],
         "warmup": 1, "measured": 2}
FULL = {"overrides": ["++data.generate_options.num=32", "++data.generate_options.progress=false"],
        "warmup": 3, "measured": 20}

COLUMNS = [
    Column("run", "run"), Column("samples_per_s", "samples/s", "{:.1f}"),
    Column("step_s", "in step s/batch"), Column("between_s", "between steps s/batch"),
    Column("loader_s", "loader alone s/batch"), Column("loader_share", "loader share", "{:.1%}"),
]


class StepClock(pl.Callback):
    """After ``warmup`` batches, sums the time inside training steps and the time between them."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.seen = self.batches = self.samples = 0
        self.inside = self.between = 0.0
        self._start = self._end = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.seen >= self.warmup and self._end is not None:
            self.between += now - self._end
        self._start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(pl_module.device)
        now = time.perf_counter()
        if self.seen >= self.warmup:
            self.inside += now - self._start
            self.batches += 1
            self.samples += len(batch["dt"])
        self.seen += 1
        self._end = now

    def row(self, run: str, loader_s: float) -> dict:
        """Per-batch times; ``loader_share`` is the loader's time alone over the whole time per batch."""
        per_batch = (self.inside + self.between) / self.batches
        return {"run": run, "samples_per_s": self.samples / (self.inside + self.between),
                "step_s": self.inside / self.batches, "between_s": self.between / self.batches,
                "loader_s": loader_s, "loader_share": loader_s / per_batch}


def loader_seconds(loader: DataLoader, batches: int) -> float:
    """Seconds per batch of iterating ``loader`` alone (no model), after its first batch (worker start-up)."""
    iterator = iter(loader)
    next(iterator)
    start, count = time.perf_counter(), 0
    while count < batches:
        try:
            next(iterator)
        except StopIteration:
            iterator = iter(loader)
            continue
        count += 1
    return (time.perf_counter() - start) / batches


def compose_experiment(options: BenchOptions, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["+experiment=burgers_upt", f"data_dir={options.work_dir.resolve()}",
                                           *overrides])


def _datamodule(cfg: DictConfig) -> GridDataModule:
    """The experiment's data module (without the evaluation's entries), data generated if missing."""
    spec = datamodule_settings(cfg)
    datamodule = GridDataModule(**{key: value for key, value in spec.items() if key != "_target_"})
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def _fit(cfg: DictConfig, options: BenchOptions, sizes: dict, module, **data) -> tuple[StepClock, pl.Trainer]:
    clock = StepClock(sizes["warmup"])
    trainer = pl.Trainer(
        accelerator="gpu" if options.device.type == "cuda" else "cpu", devices=1,
        precision=cfg.trainer.precision, gradient_clip_val=cfg.trainer.gradient_clip_val,
        max_steps=sizes["warmup"] + sizes["measured"], limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[clock],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on worker counts and logging intervals
        trainer.fit(module, **data)
    return clock, trainer


def _cached_run(cfg: DictConfig, options: BenchOptions, sizes: dict, ckpt: Path, datamodule: GridDataModule,
                fields: bool, label: str) -> tuple[dict, float]:
    """Stage 2 fitted from a LatentCache that the DataModule serves; returns its row and the build time."""
    pl.seed_everything(cfg.seed, verbose=False)
    module = build_operator_module(cfg, ckpt)
    start = time.perf_counter()
    datamodule.latent_cache = LatentCache.build(datamodule.train_set, module, batch_size=cfg.data.batch_size,
                                                fields=fields)
    build_s = time.perf_counter() - start
    try:
        loader_s = loader_seconds(datamodule.train_dataloader(), sizes["measured"])
        clock = _fit(cfg, options, sizes, module, datamodule=datamodule)[0]
    finally:
        datamodule.latent_cache = None
    what = "latent cache" if fields else "latent cache, no fields read"
    return clock.row(f"stage 2, {label}, {what}", loader_s), build_s


def run(options: BenchOptions) -> BenchResult:
    sizes = options.pick(QUICK, FULL)
    options.work_dir.mkdir(parents=True, exist_ok=True)
    cfg = compose_experiment(options, sizes["overrides"])
    datamodule = _datamodule(cfg)
    plain_loader_s = loader_seconds(datamodule.train_dataloader(), sizes["measured"])

    pl.seed_everything(cfg.seed, verbose=False)
    autoencoder = build_autoencoder(cfg, datamodule, "grid")
    clock, trainer = _fit(cfg, options, sizes, autoencoder, datamodule=datamodule)
    rows = [clock.row("stage 1 autoencoder", plain_loader_s)]
    ckpt = options.work_dir / "bench_stage1.ckpt"
    trainer.save_checkpoint(ckpt)

    cache_build_s = None
    for inverse in (True, False):
        cfg.loss.use_inverse_losses = inverse
        label = "inverse losses on" if inverse else "inverse losses off"
        pl.seed_everything(cfg.seed, verbose=False)
        clock = _fit(cfg, options, sizes, build_operator_module(cfg, ckpt), datamodule=datamodule)[0]
        rows.append(clock.row(f"stage 2, {label}, encoding", plain_loader_s))
        # Inverse losses off: no term reads the fields, so the cache leaves them out; a second run keeps them.
        for fields in (True,) if inverse else (False, True):
            row, cache_build_s = _cached_run(cfg, options, sizes, ckpt, datamodule, fields, label)
            rows.append(row)

    on_fly, cached, off_fly, off_cached, off_cached_fields = rows[1:]
    summary = {
        "cache_speedup": cached["samples_per_s"] / on_fly["samples_per_s"],
        "cache_speedup_inverse_off": off_cached["samples_per_s"] / off_fly["samples_per_s"],
        "cache_speedup_inverse_off_with_fields": off_cached_fields["samples_per_s"] / off_fly["samples_per_s"],
        "max_loader_share": max(row["loader_share"] for row in rows),
        "cache_build_s": cache_build_s,
        "cached_windows": len(datamodule.train_set),
    }
    return BenchResult(
        name="throughput",
        title=f"Training throughput, default experiment (model {cfg.model.latent_tokens}x{cfg.model.latent_dim} "
              f"latent, grid {datamodule.grid_shape}, batch {cfg.data.batch_size}, "
              f"Q={cfg.sampling.num_queries} {cfg.sampling.strategy})",
        columns=COLUMNS,
        rows=rows,
        summary=summary,
        targets=[
            Target("stage 2 samples/s with latent cache / encoding (inverse losses on)", summary["cache_speedup"],
                   2.0, at_most=False),
            Target("stage 2 samples/s with latent cache / encoding (inverse losses off, no fields read)",
                   summary["cache_speedup_inverse_off"], 2.0, at_most=False),
            Target("data loader share of step time (worst run)", summary["max_loader_share"], 0.10, at_most=True),
        ],
        settings={**sizes, "num_workers": cfg.data.num_workers, "data_file": Path(cfg.data.path).name},
        notes=["in step = training_step, backward and optimiser; between steps = data loader, batch transfer and "
               "Lightning's loop; loader share = the loader's time alone / (in step + between steps).",
               "Stage 2 runs without the curriculum callback, so the inverse weights stay at their base values."],
    )
