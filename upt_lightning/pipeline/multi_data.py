"""The pipeline over several datasets (``data.datasets``: one model over several PDEs).

A multi-dataset data group names :class:`~upt_lightning.data.MultiDataModule` and lists its datasets, each
a one-dataset data group of its own (path, generate, conservation, ...). The window settings every dataset
shares (horizons, frame stride, split) stay at the top, where the config checks and the evaluation read
them, and are handed down to each dataset here (they replace the dataset's own: the checks and the
evaluation read one horizon for all).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from upt_lightning.errors import ConfigError
from upt_lightning.metrics.conservation import resolve_quantities
from upt_lightning.models.anchors import anchor_factors

# Window settings of the top of a multi-dataset data group that each dataset inherits.
SHARED_KEYS = ("train_horizon", "rollout_horizon", "frame_stride", "window_stride", "rollout_starts", "split",
               "split_seed", "layout")
# Entries of a dataset that the evaluation reads, not its DataModule.
EVALUATION_KEYS = ("superres", "conservation")


def is_multi_data(cfg: DictConfig) -> bool:
    return cfg.data.get("datasets") is not None


def multi_datamodule_settings(settings: dict) -> dict:
    """A resolved multi-dataset data group -> MultiDataModule's arguments (each dataset's own settings)."""
    datasets = settings.get("datasets") or {}
    if not isinstance(datasets, Mapping) or not datasets:
        raise ConfigError("data.datasets must map dataset names to their data settings, e.g. {burgers: {path: ...}}")
    shared = {key: settings.pop(key) for key in SHARED_KEYS if key in settings}
    settings["datasets"] = {
        name: {**{key: value for key, value in dict(child).items() if key not in EVALUATION_KEYS}, **shared}
        for name, child in datasets.items()
    }
    return settings


def dataset_files(cfg: DictConfig) -> list[Path]:
    """The data file of every dataset, in config order."""
    return [Path(str(child.path)) for child in cfg.data.datasets.values()]


def conservation_by_dataset(cfg: DictConfig) -> dict | None:
    """``{dataset: its data.conservation}`` for the datasets that declare one; None when none does."""
    out = {name: OmegaConf.to_container(child.conservation, resolve=True)
           for name, child in cfg.data.datasets.items() if child.get("conservation") is not None}
    return out or None


def check_multi_against_data(cfg: DictConfig, datamodule) -> None:
    """ConfigError, before training, for settings that one of the datasets cannot serve."""
    if cfg.model.get("kind", "upt") != "upt":
        raise ConfigError(f"model={cfg.model.kind} trains on one dataset; give a one-dataset data group "
                          "(e.g. data=burgers2d)")
    if cfg.get("stage2", {}).get("latent_cache"):
        raise ConfigError("stage2.latent_cache serves one dataset; set stage2.latent_cache=false for data.datasets")
    declared = conservation_by_dataset(cfg) or {}
    for name, child in datamodule.children.items():
        try:
            resolve_quantities(declared.get(name), child.field_names)
        except ValueError as error:
            raise ConfigError(f"data.datasets.{name}.conservation: {error}") from None
        if child.grid_shape is None:
            raise ConfigError(f"data.datasets.{name} is a mesh: multi-dataset models take grid datasets")
    if (cfg.loss.get("lambda_conservation") or 0) > 0 and set(declared) != set(datamodule.names):
        raise ConfigError("loss.lambda_conservation > 0 needs every dataset to declare data.datasets.<name>.conservation")
    dataset_architectures(cfg, datamodule)  # patch sizes that fit every grid


def dataset_architectures(cfg: DictConfig, datamodule) -> dict[str, dict]:
    """The model's ``datasets`` argument: each dataset's fields, grid and encoder patch size.

    All datasets share one latent layout (``model.latent_tokens`` tokens at the same anchors). With one token
    per patch (``grid_encoder.pooling=patch``) each grid gets the patch size that cuts it into that layout:
    64x64 and 32x32 grids with 64 tokens get patches of 8 and 4.
    """
    encoder = cfg.model.grid_encoder
    pooling = encoder.get("pooling", "perceiver")
    out = {}
    for name, child in datamodule.children.items():
        grid = tuple(child.grid_shape)
        entry = {"field_channels": dict(child.field_spec), "grid_shape": list(grid), "encoder": {}}
        if pooling == "patch":
            layout = anchor_factors(int(cfg.model.latent_tokens), len(grid))
            if any(size % count for size, count in zip(grid, layout)):
                raise ConfigError(
                    f"data.datasets.{name}: its {grid} grid cannot be cut into the {layout} patches of "
                    f"model.latent_tokens={cfg.model.latent_tokens} tokens (one per patch); choose latent_tokens "
                    "whose layout divides every dataset's grid, or model.grid_encoder.pooling=perceiver"
                )
            entry["encoder"]["patch_size"] = [size // count for size, count in zip(grid, layout)]
        else:
            patch = encoder.patch_size
            patches = [patch if isinstance(patch, int) else patch[axis] for axis in range(len(grid))]
            if any(size % p for size, p in zip(grid, patches)):
                raise ConfigError(
                    f"model.grid_encoder.patch_size={patch} does not divide data.datasets.{name}'s {grid} grid"
                )
        out[name] = entry
    return out

