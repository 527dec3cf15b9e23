"""Resuming an interrupted ``train.py`` run from the checkpoints in its run directory.

``resume`` in the config:

* ``auto`` (default): a stage whose ``<run dir>/<stage>/checkpoints/`` holds a training checkpoint
  continues from the most advanced readable one (weights, optimiser, LR schedule, epoch, curriculum,
  RNG states); an unreadable file is moved aside with a warning. The run dir is stable when the
  command names it (``hydra.run.dir=...``), so the same command continues the same run.
* ``never``: train from scratch; refused when the run dir already holds checkpoints (they are
  never overwritten).
* a path: stage 2 continues from that stage-2 training checkpoint (stage 1 as with ``auto``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from upt_lightning.runtime.checkpoint_io import remove_stale_temp_files
from upt_lightning.errors import CheckpointError, ConfigError
from upt_lightning.runtime.checkpoints import KIND_NAMES, checkpoint_kind, read_checkpoint
from upt_lightning.pipeline.model_kind import BASELINES, model_kind

log = logging.getLogger("upt_lightning.pipeline")

MODES = ("auto", "never")
TRAINING_KEYS = ("epoch", "global_step", "loops", "optimizer_states", "state_dict")
# Config entries that may change between an interrupted run and its continuation. stage2.anchor (removed,
# docs/accuracy.md "Measured, not kept") acted after training only: a run saved with it continues without it.
FREE_KEYS = ("resume", "evaluate", "objective", "data.num_workers", "data.conservation", "data.rollout_starts",
             "callbacks.progress",
             "callbacks.sync_free_checks", "model.compile", "stage2.anchor",
             # Lightning's ModelCheckpoint (runs before RunDirCheckpoint existed) and RunDirCheckpoint share their state
             "callbacks.checkpoint._target_", "callbacks.last_checkpoint._target_")
# Removed settings and their value that meant "off": a run saved with that value trained as runs do now.
REMOVED_OFF_VALUES = {"stage2.input_noise": 0.0}
# Entries added since, with what a run saved without them did: the settings groups name the class that reads them.
IMPLIED_VALUES = {"loss._target_": "upt_lightning.losses.OperatorLoss",
                  "sampling._target_": "upt_lightning.query_sampling.QuerySampling",
                  "optim._target_": "upt_lightning.modules.optim.OptimSettings"}
UNREADABLE_SUFFIX = ".unreadable"


def resume_mode(cfg: DictConfig) -> str:
    """"auto", "never" or "path" (then ``cfg.resume`` is the checkpoint's path)."""
    value = cfg.get("resume", "auto")
    if value is None or str(value) == "":
        raise ConfigError("resume must be auto, never or the path of a stage-2 checkpoint, got an empty value")
    return str(value) if str(value) in MODES else "path"


def checkpoints_in(ckpt_dir: Path) -> list[Path]:
    return sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []


def read_training_checkpoint(path: Path, what: str = "checkpoint") -> dict[str, Any]:
    """The checkpoint at ``path`` (tensors memory-mapped), refused unless it holds a full training state."""
    checkpoint = read_checkpoint(path, what, mmap=True)
    missing = [key for key in TRAINING_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{what} {path} cannot resume training: it lacks {missing} (a weights-only checkpoint?)"
        )
    return checkpoint


def find_resume_checkpoint(ckpt_dir: Path) -> Path | None:
    """The readable training checkpoint in ``ckpt_dir`` that got furthest (``last.ckpt`` on ties).

    Unreadable files (a save cut short by a kill, a full disk) are renamed to ``*.ckpt.unreadable``
    with a warning, so the previous good checkpoint is used and nothing is deleted.
    """
    for stale in remove_stale_temp_files(ckpt_dir):
        log.info("removed %s, the temporary file of an interrupted checkpoint save", stale)
    best: tuple[tuple[int, int, bool], Path] | None = None
    for path in checkpoints_in(ckpt_dir):
        try:
            checkpoint = read_training_checkpoint(path)
        except FileNotFoundError:  # another process (a DDP rank) moved it aside meanwhile
            continue
        except CheckpointError as error:
            aside = path.with_name(path.name + UNREADABLE_SUFFIX)
            try:
                os.replace(path, aside)
            except FileNotFoundError:
                pass
            log.warning("skipping a checkpoint that cannot be resumed from (%s); moved it to %s", error, aside.name)
            continue
        progress = (int(checkpoint["global_step"]), int(checkpoint["epoch"]), path.name == "last.ckpt")
        if best is None or progress > best[0]:
            best = (progress, path)
    return None if best is None else best[1]


def stage_resume_checkpoint(cfg: DictConfig, stage: str, out_dir: Path) -> Path | None:
    """The checkpoint ``stage`` ("stage1" or "stage2") continues from, or None to start afresh."""
    mode = resume_mode(cfg)
    if mode == "path" and stage == "stage2":
        return Path(str(cfg.resume))
    if mode == "never":
        return None
    path = find_resume_checkpoint(out_dir / "checkpoints")
    if path is not None:
        checkpoint = read_training_checkpoint(path)
        log.info("%s: resuming from %s (epoch %d, step %d done)", stage, path, checkpoint["epoch"],
                 checkpoint["global_step"])
    return path


def _flat(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf}; an empty mapping holds no setting and leaves no entry."""
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    """"key: saved -> current" for each entry that differs, ignoring :data:`FREE_KEYS`.

    An entry absent on one side and null on the other does not differ: a run saved before a setting
    existed (say ``time_budget``) had what the setting's null default means, and continues. Likewise a
    removed setting saved at its off value (:data:`REMOVED_OFF_VALUES`), and an entry added since with the
    value that a run without it had (:data:`IMPLIED_VALUES`).
    """
    old, new = _flat(saved), _flat(current)
    old = {key: value for key, value in old.items() if (key, value) not in REMOVED_OFF_VALUES.items()}
    for key, value in IMPLIED_VALUES.items():
        if key.split(".")[0] in saved:
            old.setdefault(key, value)
    free = tuple(FREE_KEYS) + tuple(f"{k}." for k in FREE_KEYS)
    return [f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}"
            for key in sorted(set(old) | set(new))
            if not key.startswith(free) and old.get(key) != new.get(key)]


def check_resume(cfg: DictConfig, run_dir: Path) -> None:
    """Before anything is trained: refuse a resume that would mix runs or overwrite checkpoints."""
    mode = resume_mode(cfg)
    existing = {stage: checkpoints_in(run_dir / stage / "checkpoints") for stage in ("stage1", "stage2")}
    if mode == "never":
        found = [str(p.relative_to(run_dir)) for paths in existing.values() for p in paths]
        if found:
            raise ConfigError(
                f"resume=never, but the run dir {run_dir} already holds checkpoints {found[:4]} of an earlier "
                "run, which are never overwritten: resume=auto continues that run, or pick a new hydra.run.dir"
            )
        return
    if mode == "path":
        _check_stage2_checkpoint(Path(str(cfg.resume)), cfg)
        if existing["stage2"]:
            raise ConfigError(
                f"resume={cfg.resume} would mix with the stage-2 checkpoints already in {run_dir / 'stage2'}: "
                "resume from a checkpoint into a new hydra.run.dir"
            )
    saved_config = run_dir / "config.yaml"
    if any(existing.values()) and saved_config.is_file():
        saved = OmegaConf.to_container(OmegaConf.load(saved_config), resolve=False)
        differences = config_differences(saved, OmegaConf.to_container(cfg, resolve=True))
        if differences:
            shown = "; ".join(differences[:6]) + (" ..." if len(differences) > 6 else "")
            raise ConfigError(
                f"the run dir {run_dir} holds checkpoints of a run with another config ({shown}); rerun "
                "with that run's overrides to continue it, or choose a new hydra.run.dir"
            )


def _check_stage2_checkpoint(path: Path, cfg: DictConfig) -> None:
    checkpoint = read_training_checkpoint(path, "resume")
    configured = model_kind(cfg)
    kind, expected = checkpoint_kind(checkpoint), configured if configured in BASELINES else "operator"
    if kind != expected:
        found = KIND_NAMES.get(kind, "no stage-2 hyperparameters")
        raise CheckpointError(
            f"resume={path} is not {KIND_NAMES[expected]}: found {found}; resume=PATH continues stage 2 of the "
            "configured model (stage 1 resumes from its run dir by itself, or give autoencoder_ckpt=PATH)"
        )
    hparams = checkpoint["hyper_parameters"]
    if expected in BASELINES:
        sizes = [key for key in OmegaConf.to_container(cfg.model, resolve=True) if key != "kind"]
        saved = {f"model.{key}": hparams.get(key) for key in sizes}
        current = {f"model.{key}": OmegaConf.to_container(cfg.model, resolve=True).get(key) for key in sizes}
    else:
        saved = {"model.operator": hparams.get("operator"),
                 "model.latent_tokens": hparams["autoencoder"].get("latent_tokens"),
                 "model.latent_dim": hparams["autoencoder"].get("latent_dim")}
        current = {"model.operator": OmegaConf.to_container(cfg.model.operator, resolve=True),
                   "model.latent_tokens": cfg.model.latent_tokens, "model.latent_dim": cfg.model.latent_dim}
    mismatch = [f"{key}: checkpoint {saved[key]}, config {current[key]}" for key in saved if saved[key] != current[key]]
    if mismatch:
        raise CheckpointError(
            f"resume={path} was trained with another model size ({'; '.join(mismatch)}): pick the model preset "
            "it was trained with (e.g. model=small) or drop resume"
        )
