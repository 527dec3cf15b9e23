"""Stage 1: train the autoencoder once per configuration and reuse it from a cache."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from upt_lightning.errors import ConfigError
from upt_lightning.runtime.checkpoint_io import atomic_copy, atomic_write_bytes
from upt_lightning.runtime.checkpoints import KIND_NAMES, checkpoint_kind
from upt_lightning.models.init_from import (
    AUTOENCODER_PARTS,
    PARTS,
    check_init_checkpoint,
    fields_of,
    init_module_from,
    match_datasets,
    module_fields,
    plan_init,
)
from upt_lightning.models.builders import build_operator
from upt_lightning.modules import AutoencoderModule
from upt_lightning.modules.compile import compile_parts
from upt_lightning.pipeline.checkpoint_checks import check_state_matches
from upt_lightning.pipeline.data_settings import datamodule_settings
from upt_lightning.pipeline.init_from import init_from_identity, init_from_path
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
    init_from = init_from_identity(cfg)
    if init_from is not None:  # a stage 1 started from other weights is another model than one from scratch
        identity["init_from"] = init_from
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


def stage1_encoder_kind(cfg: DictConfig, datamodule) -> str:
    """The model's encoder: the grid one for grid data and for several datasets (a mesh dataset's entry in its
    ``datasets`` names its MeshEncoder settings, dataset_architectures), the mesh one for mesh data."""
    return "grid" if is_multi_data(cfg) or datamodule.grid_shape is not None else "mesh"


def build_autoencoder(cfg: DictConfig, datamodule, encoder_kind: str) -> AutoencoderModule:
    model = cfg.model
    encoder = {"kind": encoder_kind, **OmegaConf.to_container(model[f"{encoder_kind}_encoder"], resolve=True)}
    if encoder.get("pooling") == "region" and encoder.get("periodic") is None:
        encoder["periodic"] = data_is_periodic(datamodule)  # the windows of border cells wrap on a periodic domain
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


def check_init_from_fits(cfg: DictConfig, datamodule) -> None:
    """Plan the whole load before stage 1 trains: a tensor of another shape (a trunk of another width, an operator
    of another depth) raises now, not after stage 1. Logs the one summary of what is loaded and what starts fresh."""
    path = init_from_path(cfg)
    if path is None:
        return
    checkpoint = check_init_checkpoint(path)
    with torch.random.fork_rng(devices=[]):  # the run's random draws stay as without this check
        model = build_autoencoder(cfg, datamodule, stage1_encoder_kind(cfg, datamodule))
        settings = OmegaConf.to_container(cfg.model.operator, resolve=True)
        if model.dataset_specs is not None:
            settings["num_datasets"] = len(model.dataset_specs)
        operator = build_operator(settings, model.encoder.latent_tokens, model.encoder.latent_dim)
    target = {**model.state_dict(), **{f"operator.{key}": value for key, value in operator.state_dict().items()}}
    parts = ("operator",) if cfg.autoencoder_ckpt else PARTS
    match = match_datasets(module_fields(model), fields_of(checkpoint["hyper_parameters"]))
    plan = plan_init(target, checkpoint["state_dict"], match, parts, f"init_from={path}")
    given = f"; the autoencoder comes from autoencoder_ckpt={cfg.autoencoder_ckpt}" if cfg.autoencoder_ckpt else ""
    log.info("init_from=%s (%s): %s%s", path, KIND_NAMES[checkpoint_kind(checkpoint)], plan.summary(), given)


def obtain_autoencoder(cfg: DictConfig, datamodule, run_dir: Path) -> Path:
    """Path of the stage-1 checkpoint: given, cached, or trained now (and cached).

    An interrupted stage 1 resumes from ``run_dir/stage1/checkpoints``; the cache entry appears
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
    model = build_autoencoder(cfg, datamodule, stage1_encoder_kind(cfg, datamodule))
    if init_from_path(cfg) is not None:
        plan = init_module_from(model, init_from_path(cfg), AUTOENCODER_PARTS, log_summary=False)
        log.info("stage 1: the autoencoder starts from init_from's weights (%d tensors loaded, %d fresh)",
                 len(plan.loaded), len(plan.fresh))
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
