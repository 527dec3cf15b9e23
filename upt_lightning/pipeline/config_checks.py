"""Checks of the composed Hydra config, run before anything is generated or trained."""

from __future__ import annotations

import logging
import math
import re

from omegaconf import DictConfig, OmegaConf

from upt_lightning.errors import ConfigError
from upt_lightning.models.grid_encoder import POOLINGS
from upt_lightning.modules.compile import compile_settings
from upt_lightning.modules.nonfinite import check_nan_policy
from upt_lightning.models.refinement import check_inference_refinement, check_refinement
from upt_lightning.pipeline.init_from import init_from_path
from upt_lightning.pipeline.model_kind import BASELINES, model_kind
from upt_lightning.models.init_from import check_init_checkpoint
from upt_lightning.pipeline.settings import loss_of, optim_of, sampling_of
from upt_lightning.pipeline.stage2 import stage2_mapping
from upt_lightning.pipeline.time_budget import check_time_limits

log = logging.getLogger("upt_lightning.pipeline")

BASELINE_SETTINGS = {  # conf/model/fno.yaml, conf/model/gino.yaml
    "fno": ("kind", "n_modes", "hidden_channels", "n_layers", "fno_kwargs"),
    "gino": ("kind", "latent_grid", "radius", "n_modes", "hidden_channels", "n_layers", "gino_kwargs"),
}
# Stage-2 settings removed after their measurements (docs/accuracy.md, "Measured, not kept"). Hydra refuses ``stage2.anchor=true`` (no such key) and suggests ``+stage2.anchor=true``;
# that, or an experiment file of an earlier version, lands here instead of being ignored without a word.
REMOVED_STAGE2_SETTINGS = {"anchor": "anchored decoding", "input_noise": "training noise on the operator's input"}


def _positive_int(cfg: DictConfig, key: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}={value!r} must be a positive integer{' or null' if allow_none else ''}")


def _patch_divides(grid_shape, patch_size) -> None:
    patches = [patch_size] * len(grid_shape) if isinstance(patch_size, int) else list(patch_size)
    for axis, (size, patch) in enumerate(zip(grid_shape, patches)):
        if size % patch:
            divisors = [d for d in range(1, size + 1) if size % d == 0]
            raise ConfigError(
                f"model.grid_encoder.patch_size={patch_size} does not divide grid axis {axis} of size {size}; "
                f"choose one of {divisors}"
            )


def _several_processes(trainer: DictConfig) -> bool:
    """Whether the trainer group launches several processes (devices "auto" counts as one)."""
    devices = trainer.get("devices", 1)
    several = len(devices) > 1 if not isinstance(devices, (int, str)) else str(devices) not in ("1", "auto")
    strategy = str(trainer.get("strategy", ""))
    return several or (trainer.get("num_nodes") or 1) > 1 or any(s in strategy for s in ("ddp", "fsdp", "deepspeed"))


def _check_nan_policy(cfg: DictConfig) -> None:
    policy = cfg.get("nan_policy", "raise")
    try:
        check_nan_policy(policy)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if policy == "skip" and _several_processes(cfg.trainer):
        raise ConfigError(
            "nan_policy=skip works on one process only, but the trainer group launches several (Lightning "
            "cannot skip an optimizer step under DDP); use nan_policy=raise, or a one-device trainer"
        )


def _check_settings_objects(cfg: DictConfig) -> None:
    """Build the loss, sampling and both stages' optimiser settings once, before anything runs: each class
    checks its own settings (ConfigError naming the key)."""
    loss_of(cfg)
    sampling_of(cfg)
    for stage in ("stage1", "stage2"):
        try:
            optim_of(cfg, cfg[stage].lr)
        except ConfigError as error:  # the stage's rate is not in the optim group: name its key
            raise ConfigError(f"{stage}.lr: {error}" if "learning rate" in str(error) else str(error)) from None


def _check_baseline(cfg: DictConfig, kind: str) -> None:
    """A baseline (model.kind fno or gino): its settings, none of UPT's stage-1 settings, grid data for the FNO,
    and neuraloperator installed."""
    name = {"fno": "the FNO baseline", "gino": "the GINO baseline"}[kind]
    if kind == "fno" and str(cfg.data.get("_target_", "")).endswith("MeshDataModule"):
        raise ConfigError(
            f"model.kind=fno (the FNO baseline) needs grid data, but data={cfg.data._target_} reads scattered points "
            "(a mesh): pick grid data (data=burgers2d, burgers1d or pdebench), or a model that reads meshes: UPT "
            "(model=small, its MeshEncoder) or the GINO baseline (model=gino)"
        )
    model = OmegaConf.to_container(cfg.model, resolve=True)
    known = BASELINE_SETTINGS[kind]
    unknown = sorted(set(model) - set(known))
    if unknown:
        raise ConfigError(f"model.{unknown[0]} is not a setting of {name} (model.kind={kind}); its settings "
                          f"are {['model.' + key for key in known]}")
    modes = model.get("n_modes", 16)
    for index, value in enumerate(modes if isinstance(modes, list) else [modes]):
        _positive_int(cfg, f"model.n_modes[{index}]" if isinstance(modes, list) else "model.n_modes", value)
    for key in ("hidden_channels", "n_layers"):
        if key in model:
            _positive_int(cfg, f"model.{key}", model[key])
    if cfg.autoencoder_ckpt:
        raise ConfigError(f"autoencoder_ckpt={cfg.autoencoder_ckpt} is a UPT stage-1 checkpoint, but {name} "
                          "has no stage 1: drop autoencoder_ckpt")
    if cfg.stage2.get("latent_cache", False):
        raise ConfigError(f"stage2.latent_cache=true encodes with UPT's stage-1 encoder, which {name} does "
                          "not have: set stage2.latent_cache=false")
    from upt_lightning.baselines import require_neuralop

    require_neuralop()


def _check_objective(cfg: DictConfig) -> None:
    """The objective of sweeps and searches must be a validation metric the run logs."""
    objective = cfg.get("objective")
    if objective is None:
        return
    if not isinstance(objective, str) or not objective.startswith("val/"):
        raise ConfigError(
            f"objective={objective!r}: sweeps and searches minimise it, so it must be a validation metric "
            "(val/..., for example val/rollout_nrmse_h10); the test metrics are reported beside it, and "
            "choosing hyperparameters on them would make the test figures optimistic"
        )
    horizon = re.search(r"_h(\d+)$", objective)
    rollout_horizon = cfg.data.get("rollout_horizon")
    if horizon and rollout_horizon is not None and int(horizon.group(1)) > rollout_horizon:
        raise ConfigError(
            f"objective={objective} names horizon {horizon.group(1)}, but rollouts are evaluated up to "
            f"data.rollout_horizon={rollout_horizon}: name a horizon of at most {rollout_horizon} "
            f"(for example objective=val/rollout_nrmse_h{rollout_horizon}) or raise data.rollout_horizon"
        )


def _check_removed_settings(cfg: DictConfig) -> None:
    """A removed stage-2 setting is refused, whatever its value: the run would otherwise not do what it says."""
    for key, what in REMOVED_STAGE2_SETTINGS.items():
        if key in cfg.stage2:
            raise ConfigError(
                f"stage2.{key}={cfg.stage2[key]!r}: {what} was removed, measured not to earn its place "
                f"(docs/accuracy.md, \"Measured, not kept\"); drop stage2.{key} from the command or the experiment file"
            )


def _check_init_from(cfg: DictConfig) -> None:
    """init_from names a UPT checkpoint of this library (FileNotFoundError / CheckpointError otherwise), and
    init_from_freeze_epochs an epoch count that init_from gives a meaning to."""
    epochs = cfg.get("init_from_freeze_epochs", 0)
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0):
        raise ConfigError(f"init_from_freeze_epochs={epochs!r} must be an integer >= 0 (0: no freezing)")
    path = init_from_path(cfg)
    if path is None:
        if epochs:
            raise ConfigError(f"init_from_freeze_epochs={epochs} freezes the trunks that init_from loads, but init_from "
                              "is null: give init_from=CKPT, or set init_from_freeze_epochs=0")
        return
    kind = model_kind(cfg)
    if kind in BASELINES:
        raise ConfigError(f"init_from={path} starts a UPT from a trained UPT's weights, but model.kind={kind} is a "
                          "baseline: drop init_from, or pick a UPT model (model=small)")
    check_init_checkpoint(path)
    if epochs and _several_processes(cfg.trainer):
        raise ConfigError("init_from_freeze_epochs > 0 works on one process only (DDP fixes the trainable "
                          "parameters when it starts); set init_from_freeze_epochs=0 or use a one-device trainer")


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key of the first impossible value."""
    if model_kind(cfg) in BASELINES:
        _check_baseline(cfg, model_kind(cfg))
    else:
        try:
            compile_settings(OmegaConf.to_container(cfg.model, resolve=True).get("compile"))
        except ValueError as error:
            raise ConfigError(str(error)) from None
    _check_objective(cfg)
    _check_init_from(cfg)
    check_time_limits(cfg)
    _check_settings_objects(cfg)
    _check_nan_policy(cfg)
    for stage in ("stage1", "stage2"):
        _positive_int(cfg, f"{stage}.max_epochs", cfg[stage].max_epochs)
    latent_cache = cfg.stage2.get("latent_cache", False)
    if not isinstance(latent_cache, bool):
        raise ConfigError(f"stage2.latent_cache={latent_cache!r} must be true or false")
    try:
        check_refinement(stage2_mapping(cfg, "latent_refinement"), cfg.freeze_autoencoder)
        check_inference_refinement(stage2_mapping(cfg, "inference_refinement"))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    _check_removed_settings(cfg)
    if latent_cache and not cfg.freeze_autoencoder:
        raise ConfigError(
            "stage2.latent_cache=true needs freeze_autoencoder=true: with a trainable encoder the cached latents "
            "go stale after the first optimiser step; set stage2.latent_cache=false or freeze_autoencoder=true"
        )
    _positive_int(cfg, "data.batch_size", cfg.data.batch_size)
    split = list(cfg.data.get("split") or [])
    if len(split) != 3 or min(split) <= 0 or not math.isclose(sum(split), 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"data.split={split} must be three positive fractions (train, val, test) summing to 1, "
            "e.g. [0.8,0.1,0.1]"
        )
    _positive_int(cfg, "data.rollout_horizon", cfg.data.rollout_horizon)
    if cfg.loss.lambda_rollout > 0 and cfg.data.train_horizon < 2:
        raise ConfigError("loss.lambda_rollout > 0 needs data.train_horizon >= 2 (rollout windows in training)")
    for horizon in cfg.evaluate.plot_horizons:
        if not 1 <= horizon <= cfg.data.rollout_horizon:
            raise ConfigError(
                f"evaluate.plot_horizons contains {horizon}; horizons run from 1 to data.rollout_horizon="
                f"{cfg.data.rollout_horizon}"
            )


def check_against_data(cfg: DictConfig, grid_shape, min_points: int | None = None) -> None:
    """Checks that need the data's shape (known after the DataModule's setup).

    ``min_points`` is the smallest point count of any trajectory (meshes: the supernodes are drawn from it).
    """
    if model_kind(cfg) == "fno":
        _fno_fits_grid(cfg, grid_shape)
        return
    if model_kind(cfg) == "gino":
        return  # its sizes are checked by GINOModule against the data's coordinate dimension
    if grid_shape is not None:
        _patch_divides(grid_shape, cfg.model.grid_encoder.patch_size)
        _patch_tokens_fit(cfg, grid_shape)
        _warn_on_grid_frequencies(cfg, grid_shape)
        _refinement_points_fit(cfg, min_points)
        return
    if cfg.loss.lambda_spectral > 0:
        raise ConfigError("loss.lambda_spectral > 0 needs grid data; scattered points have no spatial FFT")
    supernodes = cfg.model.mesh_encoder.get("num_supernodes")
    supernode_pooling = cfg.model.mesh_encoder.get("pooling", "supernode") == "supernode"
    if supernode_pooling and min_points is not None and supernodes is not None and supernodes > min_points:
        raise ConfigError(
            f"model.mesh_encoder.num_supernodes={supernodes} exceeds the {min_points} points of the smallest mesh "
            f"in {cfg.data.path}; set model.mesh_encoder.num_supernodes to at most {min_points}"
        )
    _refinement_points_fit(cfg, min_points)


def _refinement_points_fit(cfg: DictConfig, min_points: int | None) -> None:
    """Refinement draws its points among each sample's (a padded mesh batch: among its largest sample's): more
    than the smallest sample holds draws the same points again and multiplies the evaluation's cost for nothing."""
    if min_points is None:
        return
    for key in ("latent_refinement", "inference_refinement"):
        points = (stage2_mapping(cfg, key) or {}).get("points")
        if points is not None and points > min_points:
            raise ConfigError(
                f"stage2.{key}.points={points} exceeds the {min_points} points of the smallest sample in "
                f"{cfg.data.path}; set stage2.{key}.points to at most {min_points}"
            )


def _warn_on_grid_frequencies(cfg: DictConfig, grid_shape) -> None:
    """Warn when the decoder's fastest Fourier feature reaches the grid's Nyquist wavenumber.

    The features have wavenumbers 2^k (cycles per unit of normalised coordinate); on a grid of n points per
    period the one at n / 2 is sampled at its zeros and peaks only (its cosine is 0 at every point of a
    periodic, cell-centred grid): the decoder learns nothing about it at the grid points and returns
    arbitrary values between them, which zero-shot super-resolution then reads.
    """
    frequencies = cfg.model.decoder.get("num_frequencies", 8)
    fastest = 2 ** (int(frequencies) - 1)
    smallest = min(int(n) for n in grid_shape)
    if fastest >= smallest / 2:
        log.warning(
            "model.decoder.num_frequencies=%s gives a Fourier feature of wavenumber %s, at or above the Nyquist "
            "wavenumber %s of the %s-point grid axis: the decoder is untrained between the grid points, so "
            "super-resolution and off-grid queries suffer; use num_frequencies <= %s",
            frequencies, fastest, smallest // 2, smallest, max(1, int(math.log2(smallest)) - 1),
        )


def _patch_tokens_fit(cfg: DictConfig, grid_shape) -> None:
    """grid_encoder.pooling=patch keeps one latent token per patch: the token count must be the patch count."""
    pooling = cfg.model.grid_encoder.get("pooling", "perceiver")
    if pooling not in POOLINGS:
        raise ConfigError(f"model.grid_encoder.pooling={pooling!r} is unknown; choose one of {list(POOLINGS)}")
    if pooling != "patch":
        return
    patch = cfg.model.grid_encoder.patch_size
    patches = [size // (patch if isinstance(patch, int) else patch[axis]) for axis, size in enumerate(grid_shape)]
    if cfg.model.latent_tokens != math.prod(patches):
        raise ConfigError(
            f"model.latent_tokens={cfg.model.latent_tokens} but model.grid_encoder.pooling=patch keeps one token per "
            f"patch, and patch_size={patch} cuts the {tuple(grid_shape)} grid into {math.prod(patches)} patches "
            f"{tuple(patches)}: set model.latent_tokens={math.prod(patches)}, change the patch size, or use "
            "model.grid_encoder.pooling=perceiver"
        )


def _fno_fits_grid(cfg: DictConfig, grid_shape) -> None:
    if grid_shape is None:
        raise ConfigError(
            f"model.kind=fno (the FNO baseline) needs grid data, but {cfg.data.path} holds scattered points: "
            "point data.path at a grid file, or use a UPT model (model=small), whose MeshEncoder reads meshes"
        )
    modes = cfg.model.get("n_modes", 16)
    modes = [modes] * len(grid_shape) if isinstance(modes, int) else list(modes)
    if len(modes) != len(grid_shape):
        raise ConfigError(f"model.n_modes={modes} names {len(modes)} axes, but the grid {tuple(grid_shape)} has "
                          f"{len(grid_shape)}: give one count per axis, or one int for all")
    for axis, (count, size) in enumerate(zip(modes, grid_shape)):
        if count > size:
            raise ConfigError(
                f"model.n_modes={cfg.model.get('n_modes', 16)} exceeds the {size} points of grid axis {axis}: modes "
                f"beyond the grid are never trained, and a finer grid would use their random weights; choose at most "
                f"{size}"
            )
