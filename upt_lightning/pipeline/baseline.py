"""The FNO baseline in place of UPT's two stages: no stage 1, one fit as stage 2 on the same DataModule."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from upt_lightning.baselines import FNOModule
from upt_lightning.callbacks import InverseLossCurriculum, LatentCacheCallback
from upt_lightning.pipeline.conservation import conservation_of
from upt_lightning.pipeline.settings import optim_of
from upt_lightning.pipeline.stage2 import fit_stage2


def build_fno_module(cfg: DictConfig, datamodule) -> FNOModule:
    """The FNO of ``cfg.model`` (conf/model/fno.yaml; keys checked by config_checks) for the DataModule's fields
    and grid, trained at ``stage2.lr``."""
    sizes = {key: value for key, value in OmegaConf.to_container(cfg.model, resolve=True).items() if key != "kind"}
    return FNOModule(field_channels=datamodule.field_spec, grid_shape=datamodule.grid_shape, **sizes,
                     optim=optim_of(cfg, cfg.stage2.lr), nan_policy=cfg.get("nan_policy", "raise"),
                     conservation=conservation_of(cfg))


def train_fno(cfg: DictConfig, datamodule, run_dir: Path):
    """Fit the FNO into ``run_dir/stage2``; returns (trainer, module with the best checkpoint's weights, best path)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_fno_module(cfg, datamodule)
    # UPT's inverse-loss curriculum has no weights to ramp in an FNO, and its latent cache no encoder to run.
    trainer, best = fit_stage2(cfg, datamodule, model, run_dir, "fno-final.ckpt",
                               skip_callbacks=(InverseLossCurriculum, LatentCacheCallback))
    return trainer, FNOModule.load_from_checkpoint(best, weights_only=True), best
