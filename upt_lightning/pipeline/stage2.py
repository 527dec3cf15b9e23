"""Stage 2: train the latent operator between the frozen stage-1 encoder and decoder (``fit_stage2`` also
fits the FNO baseline, pipeline/baseline.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from upt_lightning.modules import OperatorModule
from upt_lightning.modules.compile import compile_parts
from upt_lightning.pipeline.checkpoint_checks import check_state_matches
from upt_lightning.pipeline.conservation import conservation_of
from upt_lightning.pipeline.init_from import init_from_path
from upt_lightning.pipeline.settings import loss_of, optim_of, sampling_of
from upt_lightning.pipeline.resume import stage_resume_checkpoint
from upt_lightning.pipeline.trainers import final_checkpoint, make_trainer, stage2_callbacks
from upt_lightning.models.init_from import init_module_from

log = logging.getLogger("upt_lightning.pipeline")


def stage2_mapping(cfg: DictConfig, key: str) -> dict | None:
    """``stage2.<key>`` (e.g. ``latent_refinement``, ``inference_refinement``) as plain values (None when
    absent or null)."""
    value = cfg.stage2.get(key)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def build_operator_module(cfg: DictConfig, autoencoder_ckpt: Path) -> OperatorModule:
    """The stage-2 module: the stage-1 checkpoint, the operator's architecture, and the loss, sampling and
    optimiser objects that Hydra instantiates from their config groups (pipeline/settings.py)."""
    return OperatorModule(
        autoencoder_ckpt=str(autoencoder_ckpt),
        operator=OmegaConf.to_container(cfg.model.operator, resolve=True),
        freeze_autoencoder=cfg.freeze_autoencoder,
        loss=loss_of(cfg),
        sampling=sampling_of(cfg),
        optim=optim_of(cfg, cfg.stage2.lr),
        rollout_eval_mode=cfg.stage2.rollout_eval_mode,
        conservation=conservation_of(cfg),
        latent_refinement=stage2_mapping(cfg, "latent_refinement"),
        inference_refinement=stage2_mapping(cfg, "inference_refinement"),
        seed=cfg.seed,
        nan_policy=cfg.get("nan_policy", "raise"),
    )


def fit_stage2(cfg: DictConfig, datamodule, model: pl.LightningModule, run_dir: Path, fallback_name: str,
               skip_callbacks: tuple[type, ...] = ()):
    """Fit ``model`` as stage 2 into ``run_dir/stage2`` (logs, checkpoints; resuming when pipeline/resume.py
    finds a checkpoint), without the configured callbacks of the types ``skip_callbacks``; returns
    (trainer, path of the best checkpoint)."""
    out_dir = run_dir / "stage2"
    resume = stage_resume_checkpoint(cfg, "stage2", out_dir)
    if resume is not None:
        check_state_matches(model, resume)
    callbacks = [c for c in stage2_callbacks(cfg, out_dir) if not isinstance(c, skip_callbacks)]
    trainer: pl.Trainer = make_trainer(cfg, "stage2", out_dir, callbacks)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    best = final_checkpoint(trainer, out_dir, fallback_name)
    log.info("stage 2: best checkpoint %s", best)
    return trainer, best


def train_operator(cfg: DictConfig, datamodule, autoencoder_ckpt: Path, run_dir: Path):
    """Fit stage 2; returns (trainer, module with the best checkpoint's weights loaded, best path)."""
    # Reseeded here: whether stage 1 was trained just now (drawing random numbers) or came from the cache,
    # the operator's initial weights, the batch order and the query draws are the same.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_operator_module(cfg, autoencoder_ckpt)
    if init_from_path(cfg) is not None:
        plan = init_module_from(model, init_from_path(cfg), ("operator",), log_summary=False)
        log.info("stage 2: the operator starts from init_from's weights (%d tensors loaded, %d fresh)",
                 len(plan.loaded), len(plan.fresh))
    compiled = compile_parts(model, cfg.model.get("compile"))
    if compiled:
        log.info("stage 2: compiled %s with torch.compile", ", ".join(compiled))
    trainer, best = fit_stage2(cfg, datamodule, model, run_dir, "operator-final.ckpt")
    model = OperatorModule.load_from_checkpoint(best, weights_only=True)
    return trainer, model, best
