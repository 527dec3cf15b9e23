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

ENCODER_KINDS = ("grid", "mesh")


def build_encoder(
    config: Mapping[str, Any] | None,
    field_channels: Mapping[str, int],
    grid_shape: Sequence[int] | None,
    coord_dim: int,
    latent_tokens: int,
    latent_dim: int,
) -> nn.Module:
    """GridEncoder when kind is "grid" (needs grid_shape), MeshEncoder when "mesh"."""
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
    return MeshEncoder(coord_dim=coord_dim, **common, **kwargs)


def build_decoder(
    config: Mapping[str, Any] | None, field_channels: Mapping[str, int], coord_dim: int, latent_dim: int
) -> nn.Module:
    return AnyPointDecoder(
        field_channels=dict(field_channels), coord_dim=coord_dim, latent_dim=latent_dim, **dict(config or {})
    )


def build_operator(config: Mapping[str, Any] | None, latent_tokens: int, latent_dim: int) -> nn.Module:
    return LatentOperator(latent_dim=latent_dim, latent_tokens=latent_tokens, **dict(config or {}))


def build_autoencoder_parts(arch: Mapping[str, Any]) -> tuple[nn.Module, nn.Module, nn.Module, dict | None]:
    """(normaliser, encoder, decoder, dataset specs) of a stage-1 architecture ``arch``: field_channels, coord_dim and
    optionally grid_shape, encoder, decoder, latent_tokens (16), latent_dim (32), datasets (its checkpoint's
    hyperparameters, :data:`~upt_lightning.runtime.checkpoints.ARCH_KEYS`).

    One dataset: a :class:`FieldNormalizer`, an encoder and a decoder, specs None. Several (``datasets``,
    ``{name: {field_channels, grid_shape, encoder}}``): each part is a :class:`DatasetSwitch` with one
    normaliser, encoder stem and decoder head per dataset around shared trunks, and the checked specs.
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
        lambda name: build_encoder({**dict(encoder or {}), **specs[name]["encoder"]}, specs[name]["field_channels"],
                                   specs[name]["grid_shape"], coord_dim, latent_tokens, latent_dim),
        list(specs),
    )
    shared_dec = shared_decoder(
        lambda name: build_decoder(decoder, specs[name]["field_channels"], coord_dim, latent_dim), list(specs)
    )
    return normalizer, shared_enc, shared_dec, specs
