"""Lightning Trainers for the two stages from the Hydra config."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, OmegaConf

from upt_lightning.callbacks import FinalValidation, LatentCacheCallback
from upt_lightning.runtime.checkpoint_io import AtomicCheckpointIO
from upt_lightning.runtime.faults import fault_hooks
from upt_lightning.pipeline.init_from import freeze_callbacks
from upt_lightning.pipeline.multi_data import is_multi_data
from upt_lightning.pipeline.time_budget import stage_max_time
from upt_lightning.runtime.rng_state import RNGStateCheckpoint
from upt_lightning.runtime.run_dir_checkpoint import RunDirCheckpoint
from upt_lightning.runtime.throughput import TrainingThroughput

log = logging.getLogger("upt_lightning.pipeline")


def make_trainer(cfg: DictConfig, stage: str, out_dir: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    """A Trainer writing logs and checkpoints under out_dir (stage is "stage1" or "stage2").

    Checkpoints are written atomically and carry the RNG states, so that a killed run resumes from
    an intact checkpoint and draws what it would have drawn (see pipeline/resume.py). The stage's
    wall-clock limit comes from pipeline/time_budget.py.
    """
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    logger = instantiate(cfg.logger, save_dir=str(out_dir)) if cfg.get("logger") else False
    limit = cfg[stage].get("limit_train_batches")
    if limit is not None:
        trainer_kwargs["limit_train_batches"] = limit
    for key, value in (cfg[stage].get("trainer") or {}).items():
        if key != "max_time":  # stage_max_time weighs it against time_budget
            trainer_kwargs[key] = value
    max_time = stage_max_time(cfg, stage)
    if max_time is not None:
        trainer_kwargs["max_time"] = max_time
    if is_multi_data(cfg) and (stage == "stage1" or not cfg.get("freeze_autoencoder", True)):
        trainer_kwargs["strategy"] = with_unused_parameters(trainer_kwargs.get("strategy", "auto"))
    fault_callbacks, midway = fault_hooks(stage)
    trainer = pl.Trainer(
        **trainer_kwargs,
        max_epochs=cfg[stage].max_epochs,
        default_root_dir=str(out_dir),
        logger=logger,
        callbacks=[*callbacks, RNGStateCheckpoint(), TrainingThroughput(out_dir / "throughput.json"),
                   *fault_callbacks],
        plugins=[AtomicCheckpointIO(midway=midway)],
    )
    if (trainer.check_val_every_n_epoch or 1) > 1:
        # Behind Lightning's Timer (added in the Trainer's constructor), so it sees the stop the Timer requests.
        trainer.callbacks.append(FinalValidation())
    return trainer


# DDP strategies whose variant lets parameters go without a gradient in a step.
_FIND_UNUSED = {"ddp": "ddp_find_unused_parameters_true", "ddp_spawn": "ddp_spawn_find_unused_parameters_true"}


def with_unused_parameters(strategy):
    """The DDP ``strategy`` that tolerates parameters without a gradient in a step.

    A multi-dataset stage 1 trains one dataset's encoder stem and decoder heads per batch (the others
    get no gradient in that step); plain DDP waits for their gradients and stops with an error at the
    next step. Stage 2 trains the operator only, whose every weight takes part in every step.
    Strategies given as objects, or not DDP, are returned as they are.
    """
    return _FIND_UNUSED.get(strategy, strategy) if isinstance(strategy, str) else strategy


def stage1_callbacks(cfg: DictConfig, out_dir: Path) -> list[pl.Callback]:
    checkpoints = str(out_dir / "checkpoints")
    callbacks: list[pl.Callback] = [
        RunDirCheckpoint(dirpath=checkpoints, filename="autoencoder", monitor="val/nrmse", mode="min", save_top_k=1),
        # every epoch, also those that do not validate (check_val_every_n_epoch > 1): what resume=auto continues from
        RunDirCheckpoint(dirpath=checkpoints, filename="last", save_top_k=1, save_on_train_epoch_end=True),
    ]
    if cfg.callbacks.get("progress") is not None:
        callbacks.append(RichProgressBar())
    if cfg.callbacks.get("sync_free_checks") is not None:
        callbacks.append(instantiate(cfg.callbacks.sync_free_checks))
    return callbacks + freeze_callbacks(cfg, "stage1")


def stage2_callbacks(cfg: DictConfig, out_dir: Path) -> list[pl.Callback]:
    callbacks: list[pl.Callback] = [LatentCacheCallback()] if cfg.stage2.get("latent_cache") else []
    for name, spec in (cfg.callbacks or {}).items():
        if spec is None:
            continue
        if name in ("checkpoint", "last_checkpoint"):
            callbacks.append(instantiate(spec, dirpath=str(out_dir / "checkpoints")))
        else:
            callbacks.append(instantiate(spec))
    return callbacks + freeze_callbacks(cfg, "stage2")


def final_checkpoint(trainer: pl.Trainer, out_dir: Path, fallback_name: str) -> Path:
    """The best checkpoint of the fit; when checkpointing was off (fast_dev_run) save the final weights.

    Only a file inside ``out_dir`` counts: a path restored from a checkpoint of a run dir that was moved or
    copied since (a callback other than RunDirCheckpoint keeps the old absolute path) would evaluate
    another run's weights, or none.
    """
    callback = trainer.checkpoint_callback
    best = (callback.best_model_path or callback.last_model_path) if callback is not None else ""
    if best and Path(best).is_file():
        if Path(best).resolve().is_relative_to(out_dir.resolve()):
            return Path(best)
        log.warning("the best checkpoint on record, %s, lies outside this run dir %s (moved or copied?): "
                    "evaluating the final weights instead", best, out_dir)
    path = out_dir / "checkpoints" / fallback_name
    trainer.save_checkpoint(path)
    return path
