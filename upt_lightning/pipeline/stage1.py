"""Stage 1: train the autoencoder once per configuration and reuse it from a cache."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from upt_lightning.errors import ConfigError
from upt_lightning.runtime.checkpoint_io import atomic_copy, atomic_write_bytes
from upt_lightning.modules import AutoencoderModule
from upt_lightning.modules.compile import compile_parts
from upt_lightning.pipeline.checkpoint_checks import check_state_matches
from upt_lightning.pipeline.data_settings import datamodule_settings
from upt_lightning.pipeline.multi_data import dataset_architectures, dataset_files, encoder_overrides, is_multi_data
from upt_lightning.pipeline.settings import DEFAULT_OPTIM, group_values, optim_identity, optim_of, sampling_of
from upt_lightning.pipeline.resume import stage_resume_checkpoint
from upt_lightning.pipeline.time_budget import stage_max_time
from upt_lightning.pipeline.trainers import final_checkpoint, make_trainer, stage1_callbacks

log = logging.getLogger("upt_lightning.pipeline")


def stage1_key(cfg: DictConfig, data_file: Path | None) -> str:
    """Hash of everything stage 1 depends on: its settings, the model's encoder/decoder, sampling, data."""
    data = datamodule_settings(cfg)
    data.pop("num_workers", None)
    for settings in (data, *(data.get("datasets") or {}).values()):
        settings.pop("rollout_starts", None)  # stage 2's evaluation windows: stage 1 reconstructs frames
    identity = {
        "stage1": _stage1_settings(cfg),
        "model": {k: OmegaConf.to_container(cfg.model, resolve=True).get(k)
                  for k in ("latent_tokens", "latent_dim", "grid_encoder", "mesh_encoder", "decoder")},
        "sampling": group_values(cfg, "sampling"),  # without _target_: the keys of earlier versions stay valid
        "trainer": OmegaConf.to_container(cfg.trainer, resolve=True),
        "data": data,
        "seed": cfg.seed,
    }
    if cfg.get("optim") is not None and optim_identity(cfg) != DEFAULT_OPTIM:
        # Only a changed optim group enters the key, so stage-1 caches made before the group existed stay valid.
        identity["optim"] = optim_identity(cfg)
    if data_file is not None and data_file.exists():
        stat = data_file.stat()
        identity["data_file"] = [stat.st_size, stat.st_mtime_ns]
    if is_multi_data(cfg):
        identity["data_files"] = [[f.stat().st_size, f.stat().st_mtime_ns] if f.exists() else None
                                  for f in dataset_files(cfg)]
        overrides = encoder_overrides(cfg)
        if overrides:  # only when given, so the keys of runs without them stay as they were
            identity["dataset_encoders"] = overrides
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _stage1_settings(cfg: DictConfig) -> dict:
    """``cfg.stage1`` with its time limit as the effective seconds, and without the unset limit entries, so
    that configs without a limit keep the cache keys they had before limits existed."""
    settings = OmegaConf.to_container(cfg.stage1, resolve=True)
    settings.pop("budget_share", None)
    (settings.get("trainer") or {}).pop("max_time", None)
    max_time = stage_max_time(cfg, "stage1")
    if max_time is not None:
        settings["max_time_s"] = max_time.total_seconds()
    return settings


def data_is_periodic(datamodule) -> bool:
    """Whether the data's domain is periodic (``data.period`` set); with several datasets, every one of them."""
    children = getattr(datamodule, "children", None)
    if children is not None:
        return all(getattr(child, "period", None) is not None for child in children.values())
    return getattr(datamodule, "period", None) is not None


def decoder_settings(cfg: DictConfig, datamodule) -> dict:
    """``model.decoder`` as AnyPointDecoder's arguments; ``periodic`` follows the data unless the config sets it.

    A periodic locality bias on data without a period would wrap distances that do not wrap: refused.
    """
    decoder = OmegaConf.to_container(cfg.model.decoder, resolve=True)
    periodic = data_is_periodic(datamodule)
    if decoder.get("periodic") is None:
        decoder["periodic"] = periodic
    elif decoder["periodic"] and not periodic:
        raise ConfigError(
            "model.decoder.periodic=true needs a periodic domain, but data.period is not set; give the domain's "
            "period (e.g. data.period=1.0 for [0, 1)^d), or set model.decoder.periodic=false"
        )
    return decoder


def build_autoencoder(cfg: DictConfig, datamodule, encoder_kind: str) -> AutoencoderModule:
    model = cfg.model
    encoder = {"kind": encoder_kind, **OmegaConf.to_container(model[f"{encoder_kind}_encoder"], resolve=True)}
    datasets = dataset_architectures(cfg, datamodule) if is_multi_data(cfg) else None
    first = next(iter(datasets.values())) if datasets else None
    return AutoencoderModule(
        field_channels=first["field_channels"] if first else datamodule.field_spec,
        coord_dim=datamodule.coord_dim,
        grid_shape=first["grid_shape"] if first else datamodule.grid_shape,
        datasets=datasets,
        encoder=encoder,
        decoder=decoder_settings(cfg, datamodule),
        latent_tokens=model.latent_tokens,
        latent_dim=model.latent_dim,
        lambda_cycle=cfg.stage1.lambda_cycle,
        sampling=sampling_of(cfg),
        optim=optim_of(cfg, cfg.stage1.lr),
        seed=cfg.seed,
        nan_policy=cfg.get("nan_policy", "raise"),
    )


def obtain_autoencoder(cfg: DictConfig, datamodule, run_dir: Path) -> Path:
    """Path of the stage-1 checkpoint: given, cached, or trained now (and cached).

    An interrupted stage 1 resumes from ``run_dir/stage1/checkpoints``; the cache entry appears
    if encoder.get("pooling") == "region" and encoder.get("periodic") is None:
        encoder["periodic"] = data_is_periodic(datamodule)  # the windows of border cells wrap on a periodic domain
    only when stage 1 has finished, in one atomic rename, so it never holds a half-trained model.
    """
    if cfg.autoencoder_ckpt:
        path = Path(cfg.autoencoder_ckpt)
        if not path.is_file():
            raise FileNotFoundError(f"autoencoder_ckpt={path} does not exist; drop the override to train stage 1")
        log.info("stage 1: using the given autoencoder %s", path)
        return path
    key = stage1_key(cfg, None if is_multi_data(cfg) else Path(cfg.data.path))
    cached = Path(cfg.cache_dir) / key / "autoencoder.ckpt"
    if cached.is_file():
        log.info("stage 1: reusing the cached autoencoder %s (same stage-1 config and data)", cached)
        return cached
    log.info("stage 1: training the autoencoder (cache key %s)", key)
    # Reseeded like stage 2: its random draws depend on the seed only, not on what ran before.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    # Several datasets: the model's encoder is the grid one; a mesh dataset's entry in its ``datasets`` names
    # its MeshEncoder settings (dataset_architectures).
    encoder_kind = "grid" if is_multi_data(cfg) or datamodule.grid_shape is not None else "mesh"
    model = build_autoencoder(cfg, datamodule, encoder_kind)
    compiled = compile_parts(model, cfg.model.get("compile"))
    if compiled:
        log.info("stage 1: compiled %s with torch.compile", ", ".join(compiled))
    out_dir = run_dir / "stage1"
    resume = stage_resume_checkpoint(cfg, "stage1", out_dir)
    if resume is not None:
        check_state_matches(model, resume)
    trainer = make_trainer(cfg, "stage1", out_dir, stage1_callbacks(cfg, out_dir))
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    best = final_checkpoint(trainer, out_dir, "autoencoder-final.ckpt")
    if trainer.is_global_zero:
        # config.yaml first: a complete autoencoder.ckpt is the entry's "done" mark.
        atomic_write_bytes(cached.parent / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
        atomic_copy(best, cached)
        log.info("stage 1: cached the autoencoder as %s", cached)
    return cached
