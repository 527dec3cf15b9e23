"""Stage 2: train the latent operator between the frozen stage-1 encoder and decoder."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from upt_lightning.modules import OperatorModule
from upt_lightning.pipeline.checkpoint_checks import check_state_matches
from upt_lightning.pipeline.resume import stage_resume_checkpoint
from upt_lightning.pipeline.trainers import final_checkpoint, make_trainer, stage2_callbacks

log = logging.getLogger("upt_lightning.pipeline")


def build_operator_module(cfg: DictConfig, autoencoder_ckpt: Path) -> OperatorModule:
    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    return OperatorModule(
        autoencoder_ckpt=str(autoencoder_ckpt),
        operator=OmegaConf.to_container(cfg.model.operator, resolve=True),
        freeze_autoencoder=cfg.freeze_autoencoder,
        **loss,
        num_queries=cfg.sampling.num_queries,
        query_strategy=cfg.sampling.strategy,
        per_sample_queries=cfg.sampling.per_sample,
        rollout_eval_mode=cfg.stage2.rollout_eval_mode,
        lr=cfg.stage2.lr,
        seed=cfg.seed,
        nan_policy=cfg.get("nan_policy", "raise"),
    )


def train_operator(cfg: DictConfig, datamodule, autoencoder_ckpt: Path, run_dir: Path):
    """Fit stage 2 (resuming when pipeline/resume.py finds a checkpoint); returns (trainer, module with
    the best checkpoint's weights loaded, best path)."""
    # Reseeded here: whether stage 1 was trained just now (drawing random numbers) or came from the cache,
    # the operator's initial weights, the batch order and the query draws are the same.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_operator_module(cfg, autoencoder_ckpt)
    out_dir = run_dir / "stage2"
    resume = stage_resume_checkpoint(cfg, "stage2", out_dir)
    if resume is not None:
        check_state_matches(model, resume)
    trainer: pl.Trainer = make_trainer(cfg, "stage2", out_dir, stage2_callbacks(cfg, out_dir))
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    best = final_checkpoint(trainer, out_dir, "operator-final.ckpt")
    log.info("stage 2: best checkpoint %s", best)
    model = OperatorModule.load_from_checkpoint(best, weights_only=True)
    return trainer, model, best
