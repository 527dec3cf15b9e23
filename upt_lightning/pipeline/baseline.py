"""A baseline (the FNO, GINO) in place of UPT's two stages: no stage 1, one fit as stage 2 on the same DataModule."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from upt_lightning.baselines import FNOModule, GINOModule
from upt_lightning.baselines.neuralop_base import NeuralopBaseline
from upt_lightning.callbacks import InverseLossCurriculum, LatentCacheCallback
from upt_lightning.pipeline.conservation import conservation_of
from upt_lightning.pipeline.settings import optim_of
from upt_lightning.pipeline.stage2 import fit_stage2


BASELINE_CLASSES: dict[str, type[NeuralopBaseline]] = {"fno": FNOModule, "gino": GINOModule}


def build_baseline_module(cfg: DictConfig, datamodule) -> NeuralopBaseline:
    """The baseline of ``cfg.model`` (conf/model/fno.yaml, gino.yaml; keys checked by config_checks) for the
    DataModule's fields and grid (FNO) or coordinate dimension (GINO), trained at ``stage2.lr``."""
    kind = cfg.model.kind
    sizes = {key: value for key, value in OmegaConf.to_container(cfg.model, resolve=True).items() if key != "kind"}
    where = {"grid_shape": datamodule.grid_shape} if kind == "fno" else {"coord_dim": datamodule.coord_dim}
    return BASELINE_CLASSES[kind](field_channels=datamodule.field_spec, **where, **sizes,
                                  optim=optim_of(cfg, cfg.stage2.lr), nan_policy=cfg.get("nan_policy", "raise"),
                                  conservation=conservation_of(cfg))


def train_baseline(cfg: DictConfig, datamodule, run_dir: Path):
    """Fit the baseline into ``run_dir/stage2``; returns (trainer, module with the best checkpoint's weights, best
    path)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_baseline_module(cfg, datamodule)
    # UPT's inverse-loss curriculum has no weights to ramp in a baseline, and its latent cache no encoder to run.
    trainer, best = fit_stage2(cfg, datamodule, model, run_dir, f"{cfg.model.kind}-final.ckpt",
                               skip_callbacks=(InverseLossCurriculum, LatentCacheCallback))
    return trainer, type(model).load_from_checkpoint(best, weights_only=True), best
