"""Build the models from plain config dicts, so hyperparameters stay YAML- and checkpoint-friendly.

``encoder`` is ``{"kind": "grid" | "mesh", **constructor kwargs}``; ``decoder`` and ``operator``
are constructor kwargs. The latent shape (tokens, dim) is shared by all three and passed once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from upt_lightning.fields import total_channels, validate_field_spec
from upt_lightning.models.any_point_decoder import AnyPointDecoder
from upt_lightning.models.grid_encoder import GridEncoder
from upt_lightning.models.latent_operator import LatentOperator
from upt_lightning.models.mesh_encoder import MeshEncoder
from upt_lightning.models.multi_dataset import DatasetSwitch, dataset_specs, shared_decoder, shared_encoder
from upt_lightning.models.normalizer import FieldNormalizer
from upt_lightning.models.region_encoder import RegionEncoder

ENCODER_KINDS = ("grid", "mesh")
MESH_POOLINGS = ("supernode", "region")
# MeshEncoder settings that only supernode pooling reads; a config may keep them beside pooling="region".
SUPERNODE_KEYS = ("num_supernodes", "radius", "max_neighbours", "chunk_size", "search_budget_mib", "locality")


def build_encoder(
    config: Mapping[str, Any] | None,
    field_channels: Mapping[str, int],
    grid_shape: Sequence[int] | None,
    coord_dim: int,
    latent_tokens: int,
    latent_dim: int,
) -> nn.Module:
    """GridEncoder when kind is "grid" (needs grid_shape); for "mesh", MeshEncoder (``pooling`` "supernode", the
    default) or RegionEncoder (``pooling="region"``, which leaves the supernode settings unused)."""
    kwargs = dict(config or {})
    kind = kwargs.pop("kind", "grid" if grid_shape is not None else "mesh")
    if kind not in ENCODER_KINDS:
        raise ValueError(f"model.encoder.kind={kind!r} is unknown; choose one of {ENCODER_KINDS}")
    common = dict(field_channels=dict(field_channels), latent_tokens=latent_tokens, latent_dim=latent_dim)
    if kind == "grid":
        if grid_shape is None:
            raise ValueError(
                "model.encoder.kind='grid' needs a regular grid, but the data are scattered points: "
                "use encoder kind 'mesh' (MeshEncoder) for mesh data"
            )
        return GridEncoder(grid_shape=tuple(grid_shape), **common, **kwargs)
    pooling = kwargs.pop("pooling", "supernode")
    if pooling not in MESH_POOLINGS:
        raise ValueError(f"model.mesh_encoder.pooling={pooling!r} is unknown; choose one of {MESH_POOLINGS}")
    if pooling == "region":
        return RegionEncoder(coord_dim=coord_dim, **common,
                             **{k: v for k, v in kwargs.items() if k not in SUPERNODE_KEYS})
    return MeshEncoder(coord_dim=coord_dim, **common, **kwargs)


def build_decoder(
    config: Mapping[str, Any] | None, field_channels: Mapping[str, int], coord_dim: int, latent_dim: int
) -> nn.Module:
    return AnyPointDecoder(
        field_channels=dict(field_channels), coord_dim=coord_dim, latent_dim=latent_dim, **dict(config or {})
    )


def build_operator(config: Mapping[str, Any] | None, latent_tokens: int, latent_dim: int) -> nn.Module:
    return LatentOperator(latent_dim=latent_dim, latent_tokens=latent_tokens, **dict(config or {}))


def encoder_kind(config: Mapping[str, Any] | None, grid_shape: Sequence[int] | None) -> str:
    """The encoder kind ``config`` names, else the data's: "grid" with a grid, "mesh" without."""
    return str((config or {}).get("kind") or ("grid" if grid_shape is not None else "mesh"))


def dataset_encoder(encoder: Mapping[str, Any] | None, spec: Mapping[str, Any]) -> dict:
    """The encoder settings of one dataset of a multi-dataset model: ``spec["encoder"]`` over ``encoder``.

    A dataset's ``encoder`` entry overrides keys of the model's ``encoder`` (a grid's ``patch_size``) when both
    are of one kind. A dataset of another kind than ``encoder`` (a mesh dataset, ``{"kind": "mesh", ...}``, in
    a model whose ``encoder`` is the grid one) inherits none of its keys: its entry holds its complete settings
    (the pipeline writes ``model.mesh_encoder`` there). The kind of a dataset without one is its data's.
    """
    base, own, grid = dict(encoder or {}), dict(spec.get("encoder") or {}), spec.get("grid_shape")
    kind = own.get("kind")
    if kind is None:  # the model's kind where the data can take it (a mesh cannot take a grid encoder)
        fits = base.get("kind") is not None and (base["kind"] != "grid" or grid is not None)
        kind = base["kind"] if fits else encoder_kind(None, grid)
    if encoder_kind(base, grid) != kind:
        base = {}
    return {**base, **own, "kind": kind}


def build_autoencoder_parts(arch: Mapping[str, Any]) -> tuple[nn.Module, nn.Module, nn.Module, dict | None]:
    """(normaliser, encoder, decoder, dataset specs) of a stage-1 architecture ``arch``: field_channels, coord_dim and
    optionally grid_shape, encoder, decoder, latent_tokens (16), latent_dim (32), datasets (its checkpoint's
    hyperparameters, :data:`~upt_lightning.runtime.checkpoints.ARCH_KEYS`).

    One dataset: a :class:`FieldNormalizer`, an encoder and a decoder, specs None. Several (``datasets``,
    ``{name: {field_channels, grid_shape, encoder}}``): each part is a :class:`DatasetSwitch` with one
    normaliser, encoder stem and decoder head per dataset around shared trunks, and the checked specs. Grid
    and mesh datasets mix: each dataset's encoder is of its own kind (:func:`dataset_encoder`), a
    :class:`GridEncoder` patch stem for a grid, a :class:`MeshEncoder` supernode stem for a mesh.
    """
    coord_dim, encoder, decoder = int(arch["coord_dim"]), arch.get("encoder"), arch.get("decoder")
    latent_tokens, latent_dim = arch.get("latent_tokens", 16), arch.get("latent_dim", 32)
    grid_shape, datasets = arch.get("grid_shape"), arch.get("datasets")
    if datasets is None:
        spec = validate_field_spec(arch["field_channels"])
        grid = None if grid_shape is None else tuple(int(s) for s in grid_shape)
        return (FieldNormalizer(total_channels(spec), coord_dim),
                build_encoder(encoder, spec, grid, coord_dim, latent_tokens, latent_dim),
                build_decoder(decoder, spec, coord_dim, latent_dim), None)
    specs = dataset_specs(datasets)
    normalizer = DatasetSwitch({name: FieldNormalizer(total_channels(spec["field_channels"]), coord_dim)
                                for name, spec in specs.items()})
    shared_enc = shared_encoder(
        lambda name: build_encoder(dataset_encoder(encoder, specs[name]), specs[name]["field_channels"],
                                   specs[name]["grid_shape"], coord_dim, latent_tokens, latent_dim),
        list(specs),
    )
    shared_dec = shared_decoder(
        lambda name: build_decoder(decoder, specs[name]["field_channels"], coord_dim, latent_dim), list(specs)
    )
    return normalizer, shared_enc, shared_dec, specs
