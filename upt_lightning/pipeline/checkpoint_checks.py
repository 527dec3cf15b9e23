"""Checks of given checkpoints against the data and the config, before anything is trained.

A stage-1 checkpoint trained on other fields, another grid or another model size would otherwise
fail deep inside torch (a shape mismatch in ``load_state_dict`` or the first forward pass), or, worse,
run with a model the config does not describe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from upt_lightning.errors import CheckpointError
from upt_lightning.pipeline.multi_data import dataset_architectures, is_multi_data
from upt_lightning.runtime.checkpoints import load_autoencoder_checkpoint, read_checkpoint


def _plain(value: Any) -> Any:
    """Tuples as lists, dict keys as str: values that compare equal however they were stored."""
    return json.loads(json.dumps(value, default=str))


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [f"{key}: checkpoint {saved[key]}, now {current[key]}" for key in current
            if _plain(saved.get(key)) != _plain(current[key])]


def _model_in_config(cfg: DictConfig, kind: str, saved: dict[str, Any]) -> tuple[dict, dict]:
    """(saved, configured) model sizes; encoder/decoder entries only where both name them."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    current = {"model.latent_tokens": model["latent_tokens"], "model.latent_dim": model["latent_dim"]}
    stored = {"model.latent_tokens": saved.get("latent_tokens"), "model.latent_dim": saved.get("latent_dim")}
    for key, configured, in_ckpt in ((f"{kind}_encoder", model[f"{kind}_encoder"], saved.get("encoder") or {}),
                                     ("decoder", model["decoder"], saved.get("decoder") or {})):
        for name in sorted(set(configured) & set(in_ckpt)):
            current[f"model.{key}.{name}"] = configured[name]
            stored[f"model.{key}.{name}"] = in_ckpt[name]
    return stored, current


def check_autoencoder_ckpt(cfg: DictConfig, datamodule) -> None:
    """Refuse a given ``autoencoder_ckpt`` that is missing, not stage 1, or not for this data and model.

    A stage-1 checkpoint of one dataset and one of several (``data.datasets``, its ``datasets`` entry) are not
    interchangeable: each is refused for the other kind of run with a message naming both.
    """
    if not cfg.autoencoder_ckpt:
        return
    path = Path(str(cfg.autoencoder_ckpt))
    if not path.is_file():
        raise FileNotFoundError(f"autoencoder_ckpt={path} does not exist; drop the override to train stage 1")
    arch, _ = load_autoencoder_checkpoint(path)
    if is_multi_data(cfg):
        _check_datasets(path, arch, dataset_architectures(cfg, datamodule))
        kind = "grid"  # the model's encoder is the grid one; a mesh dataset's settings are in its entry, compared above
    else:
        _check_single(path, arch, cfg, datamodule)
        kind = "grid" if datamodule.grid_shape is not None else "mesh"
    stored, current = _model_in_config(cfg, kind, arch)
    mismatch = _differences(stored, current)
    if mismatch:
        raise CheckpointError(
            f"autoencoder_ckpt={path} was trained with another model size ({'; '.join(mismatch)}); set the model "
            "to the checkpoint's (the model preset it was trained with, e.g. model=small, or these keys)"
        )


def _check_single(path: Path, arch: dict[str, Any], cfg: DictConfig, datamodule) -> None:
    if arch.get("datasets"):
        raise CheckpointError(
            f"autoencoder_ckpt={path} is a multi-dataset stage-1 checkpoint (datasets {sorted(arch['datasets'])}), "
            f"but this run has one dataset ({cfg.data.path}): give the stage-1 checkpoint of a one-dataset run on "
            "this data, drop autoencoder_ckpt to train stage 1, or run it on its datasets "
            "(+experiment=multiphysics_upt, data.datasets)"
        )
    grid = datamodule.grid_shape
    data = {"fields": dict(datamodule.field_spec), "coordinate dimension": datamodule.coord_dim,
            "grid": list(grid) if grid is not None else None}
    saved = {"fields": arch.get("field_channels"), "coordinate dimension": arch.get("coord_dim"),
             "grid": arch.get("grid_shape")}
    mismatch = _differences(saved, data)
    if mismatch:
        raise CheckpointError(
            f"autoencoder_ckpt={path} was trained on other data than {cfg.data.path} ({'; '.join(mismatch)}); "
            "drop autoencoder_ckpt to train stage 1 on this data, or use the data it was trained on"
        )


def _check_datasets(path: Path, arch: dict[str, Any], expected: dict[str, dict]) -> None:
    """The checkpoint's datasets (names, fields, grids, patch sizes) against ``dataset_architectures``'."""
    saved = arch.get("datasets")
    if not saved:
        raise CheckpointError(
            f"autoencoder_ckpt={path} is a one-dataset stage-1 checkpoint (fields {arch.get('field_channels')}), "
            f"but data.datasets names {sorted(expected)}: a multi-dataset model needs the stage-1 checkpoint of a "
            "multi-dataset run on these datasets; drop autoencoder_ckpt to train stage 1"
        )
    if sorted(saved) != sorted(expected):
        raise CheckpointError(
            f"autoencoder_ckpt={path} was trained on the datasets {sorted(saved)}, but data.datasets names "
            f"{sorted(expected)}: use the checkpoint of a run on these datasets, or drop autoencoder_ckpt"
        )
    current = {f"{name}.{key}": value for name, entry in expected.items() for key, value in entry.items()}
    mismatch = _differences({key: saved[key.split(".", 1)[0]].get(key.split(".", 1)[1]) for key in current}, current)
    if mismatch:
        raise CheckpointError(
            f"autoencoder_ckpt={path} was trained on other data ({'; '.join(mismatch)}): use the data it was trained "
            "on, or drop autoencoder_ckpt to train stage 1 on this data"
        )


def check_state_matches(model: torch.nn.Module, path: Path) -> None:
    """Refuse to resume ``model`` from ``path`` when the weights' names or shapes differ."""
    saved = {k: tuple(v.shape) for k, v in read_checkpoint(path, "resume checkpoint", mmap=True)["state_dict"].items()}
    current = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = [f"{k}: missing in the checkpoint" for k in current if k not in saved]
    problems += [f"{k}: not in this model" for k in saved if k not in current]
    problems += [f"{k}: checkpoint {saved[k]}, model {current[k]}" for k in current
                 if k in saved and saved[k] != current[k]]
    if problems:
        raise CheckpointError(
            f"{path} does not fit this model ({len(problems)} tensors differ, e.g. {'; '.join(problems[:3])}): "
            "it was trained with another model size or data; resume with that run's config or start a new run dir"
        )
