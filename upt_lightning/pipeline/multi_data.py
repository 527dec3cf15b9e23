"""The pipeline over several datasets (``data.datasets``: one model over several PDEs).

A multi-dataset data group names :class:`~upt_lightning.data.MultiDataModule` and lists its datasets, each
a one-dataset data group of its own (path, generate, conservation, ...). The window settings every dataset
shares (horizons, frame stride, split) stay at the top, where the config checks and the evaluation read
them, and are handed down to each dataset here (they replace the dataset's own: the checks and the
evaluation read one horizon for all).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from upt_lightning.errors import ConfigError
from upt_lightning.metrics.conservation import resolve_quantities
from upt_lightning.models.anchors import anchor_factors
from upt_lightning.models.grid_encoder import GridEncoder
from upt_lightning.models.mesh_encoder import MeshEncoder

# Window settings of the top of a multi-dataset data group that each dataset inherits.
SHARED_KEYS = ("train_horizon", "rollout_horizon", "frame_stride", "window_stride", "rollout_starts", "split",
               "split_seed", "layout")
# Entries of a dataset that the evaluation reads, not its DataModule.
EVALUATION_KEYS = ("superres", "conservation")
# Entries of a dataset that the model reads, not its DataModule: ``encoder``, keys of model.grid_encoder or
# model.mesh_encoder (by the dataset's kind) that this dataset's encoder stem overrides (a mesh's radius).
MODEL_KEYS = ("encoder",)
# Encoder keys of the trunk all datasets share: one value for all, never a dataset's own.
TRUNK_KEYS = ("dim", "depth", "num_heads", "mlp_ratio")
ENCODERS = {"grid": GridEncoder, "mesh": MeshEncoder}


def is_multi_data(cfg: DictConfig) -> bool:
    return cfg.data.get("datasets") is not None


def multi_datamodule_settings(settings: dict) -> dict:
    """A resolved multi-dataset data group -> MultiDataModule's arguments (each dataset's own settings)."""
    datasets = settings.get("datasets") or {}
    if not isinstance(datasets, Mapping) or not datasets:
        raise ConfigError("data.datasets must map dataset names to their data settings, e.g. {burgers: {path: ...}}")
    shared = {key: settings.pop(key) for key in SHARED_KEYS if key in settings}
    settings["datasets"] = {
        name: {**{key: value for key, value in dict(child).items() if key not in EVALUATION_KEYS + MODEL_KEYS},
               **shared}
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


def encoder_overrides(cfg: DictConfig) -> dict[str, dict]:
    """``{dataset: its data.datasets.<name>.encoder}`` for the datasets that give one (plain types)."""
    out = {}
    for name, child in cfg.data.datasets.items():
        given = child.get("encoder")
        if given is None:
            continue
        if not isinstance(given, Mapping) and not OmegaConf.is_dict(given):
            raise ConfigError(f"data.datasets.{name}.encoder must map encoder keys to values, e.g. {{radius: 0.1}}")
        out[name] = OmegaConf.to_container(given, resolve=True) if OmegaConf.is_dict(given) else dict(given)
    return out


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
        if child.grid_shape is None and (cfg.loss.get("lambda_spectral") or 0) > 0:
            raise ConfigError(f"loss.lambda_spectral > 0 needs grid data, but data.datasets.{name} is a mesh "
                              "(scattered points have no spatial FFT); set loss.lambda_spectral=0")
    if (cfg.loss.get("lambda_conservation") or 0) > 0 and set(declared) != set(datamodule.names):
        raise ConfigError("loss.lambda_conservation > 0 needs every dataset to declare data.datasets.<name>.conservation")
    architectures = dataset_architectures(cfg, datamodule)  # patch sizes that fit every grid
    for name, child in datamodule.children.items():
        if child.grid_shape is not None or architectures[name]["encoder"].get("pooling") == "region":
            continue
        # The supernodes are drawn among each sample's points: a mesh with fewer cannot be encoded.
        supernodes = architectures[name]["encoder"].get(
            "num_supernodes", inspect.signature(MeshEncoder).parameters["num_supernodes"].default)
        smallest = min(child.source.num_points(traj) for traj in range(child.source.num_trajectories))
        if supernodes > smallest:
            raise ConfigError(
                f"the encoder of data.datasets.{name} draws num_supernodes={supernodes} supernodes, more than the "
                f"{smallest} points of its smallest mesh; set model.mesh_encoder.num_supernodes (or "
                f"data.datasets.{name}.encoder.num_supernodes) to at most {smallest}"
            )


def dataset_architectures(cfg: DictConfig, datamodule) -> dict[str, dict]:
    """The model's ``datasets`` argument: each dataset's fields, grid and encoder settings.

    All datasets share one latent layout (``model.latent_tokens`` tokens at the same anchors). With one token
    per patch (``grid_encoder.pooling=patch``) each grid gets the patch size that cuts it into that layout:
    64x64 and 32x32 grids with 64 tokens get patches of 8 and 4. The model's ``encoder`` is the grid one
    (``model.grid_encoder``); a mesh dataset's entry holds its complete MeshEncoder settings,
    ``{"kind": "mesh", **model.mesh_encoder}``, and its grid_shape is None. ``data.datasets.<name>.encoder``
    overrides keys of either kind for that dataset (a mesh's num_supernodes or radius), except the shared trunk's
    (:data:`TRUNK_KEYS`) and the pooling.
    """
    encoder = cfg.model.grid_encoder
    pooling = encoder.get("pooling", "perceiver")
    overrides = encoder_overrides(cfg)
    mesh = OmegaConf.to_container(cfg.model.mesh_encoder, resolve=True)
    out = {}
    for name, child in datamodule.children.items():
        own = overrides.get(name, {})
        kind = "grid" if child.grid_shape is not None else "mesh"
        shared = sorted(set(own) & {*TRUNK_KEYS, "pooling"})
        if shared or "kind" in own:
            raise ConfigError(
                f"data.datasets.{name}.encoder sets {shared or ['kind']}: "
                + ("the encoder trunk and the token layout are shared by every dataset, so these are "
                   "model.grid_encoder's and model.mesh_encoder's" if shared else
                   "a dataset's encoder kind is its data's (grid data: GridEncoder, a mesh: MeshEncoder)")
            )
        # The model sets these from the data and model.latent_*: not a dataset's to override.
        settable = set(inspect.signature(ENCODERS[kind]).parameters) - {
            "field_channels", "grid_shape", "coord_dim", "latent_tokens", "latent_dim"}
        unknown = sorted(set(own) - settable)
        if unknown:
            raise ConfigError(f"data.datasets.{name}.encoder sets {unknown}, which the {kind} dataset's encoder "
                              f"({ENCODERS[kind].__name__}) does not take")
        if kind == "mesh":
            entry = {"field_channels": dict(child.field_spec), "grid_shape": None,
                     "encoder": {"kind": "mesh", **mesh, **own}}
            if entry["encoder"].get("pooling") == "region" and entry["encoder"].get("periodic") is None:
                entry["encoder"]["periodic"] = getattr(child, "period", None) is not None
            trunk = {key: (encoder.get(key), entry["encoder"].get(key)) for key in TRUNK_KEYS}
            differ = {key: pair for key, pair in trunk.items() if pair[0] != pair[1]}
            if differ and any(other.grid_shape is not None for other in datamodule.children.values()):
                raise ConfigError(
                    f"data.datasets.{name} is a mesh, encoded by a MeshEncoder stem around the trunk the grid "
                    f"datasets share, but model.grid_encoder and model.mesh_encoder differ in the trunk's "
                    + ", ".join(f"{key} ({grid} against {mesh_value})" for key, (grid, mesh_value) in differ.items())
                    + "; give both the same values"
                )
            out[name] = entry
            continue
        grid = tuple(child.grid_shape)
        entry = {"field_channels": dict(child.field_spec), "grid_shape": list(grid), "encoder": dict(own)}
        if pooling == "patch" and "patch_size" in own:
            raise ConfigError(
                f"data.datasets.{name}.encoder.patch_size: with model.grid_encoder.pooling=patch each grid's patch "
                "size is the one that cuts it into the shared token layout; drop the override"
            )
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
            patch = own.get("patch_size", encoder.patch_size)
            patches = [patch if isinstance(patch, int) else patch[axis] for axis in range(len(grid))]
            if any(size % p for size, p in zip(grid, patches)):
                where = f"data.datasets.{name}.encoder" if "patch_size" in own else "model.grid_encoder"
                raise ConfigError(f"{where}.patch_size={patch} does not divide data.datasets.{name}'s {grid} grid")
        out[name] = entry
    return out

