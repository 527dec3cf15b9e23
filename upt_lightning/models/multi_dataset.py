"""One model over several datasets: dataset-specific stems and heads around shared trunks.

Each dataset has its own fields (names, channel counts) and, for grids, its own grid. The encoder keeps
one :class:`GridEncoder` / :class:`MeshEncoder` per dataset, of the dataset's kind (grids and meshes mix),
whose *stem* is its own (a grid's patch embedding, raw channels of one patch to the trunk width, and
position table; a mesh's supernode message passing), while the transformer trunk, final norm and pooling
into latent tokens are one module shared by all of them (the pooling by all that pool alike: see
:func:`shared_encoder`). The decoder likewise
keeps one :class:`AnyPointDecoder` per dataset sharing the query embedding, the latent projection and
the cross-attention trunk; only the output heads (one linear map per field) differ. All datasets meet
in one latent space: the same number of tokens and channels, the same token anchors, one operator.

The wrappers dispatch to the dataset named by ``active`` (set by the LightningModule from the batch,
see :mod:`upt_lightning.modules.datasets`), so losses and evaluation code written for one dataset run
unchanged. Attributes not defined here (``field_channels``, ``latent_tokens``, ``grid_shape``, ...) are
those of the active dataset's model.

Shared trunk modules appear under every dataset's name in ``state_dict`` (the same tensors; loading
writes each one once per name, with equal values), so a checkpoint is a plain state dict that loads
strictly and whose per-dataset entries each describe a complete single-dataset model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from upt_lightning.fields import validate_field_spec

ENCODER_TRUNK = ("blocks", "norm", "pool")
DECODER_TRUNK = ("query_embed", "latent_proj", "blocks", "norm")


def check_dataset_names(names: Sequence[str]) -> list[str]:
    """Dataset names become metric prefixes (``test/<name>/nrmse``) and state-dict keys."""
    names = list(names)
    if not names:
        raise ValueError("datasets is empty: give at least one dataset")
    for name in names:
        if not isinstance(name, str) or not name or "/" in name or "." in name:
            raise ValueError(
                f"dataset name {name!r} must be a non-empty string without '/' or '.' (it becomes a metric "
                "prefix and a state-dict key); rename it in data.datasets"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names repeat: {names}")
    return names


class DatasetSwitch(nn.Module):
    """Holds one module per dataset in ``parts`` and runs the one named by ``active``.

    ``forward(*args, **kwargs)`` is the active part's; unknown attributes are read from the active part.
    """

    def __init__(self, parts: Mapping[str, nn.Module]):
        super().__init__()
        names = check_dataset_names(parts.keys())
        self.parts = nn.ModuleDict(parts)
        self.active = names[0]

    @property
    def names(self) -> list[str]:
        return list(self.parts.keys())

    def activate(self, name: str) -> None:
        if name not in self.parts:
            raise KeyError(f"unknown dataset {name!r}; this model knows {self.names}")
        self.active = name

    @property
    def current(self) -> nn.Module:
        return self.parts[self.active]

    def forward(self, *args, **kwargs):
        return self.current(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            parts = self.__dict__.get("_modules", {}).get("parts")
            active = self.__dict__.get("active")
            if parts is None or active is None:
                raise
            return getattr(parts[active], name)


def tie_trunks(models: Mapping[str, nn.Module], trunk: Sequence[str]) -> None:
    """Make every model's ``trunk`` submodules the first model's (one set of weights, shared)."""
    first = next(iter(models.values()))
    for model in list(models.values())[1:]:
        for attr in trunk:
            setattr(model, attr, getattr(first, attr))


def pooling_of(encoder: nn.Module) -> str:
    """How an encoder pools its tokens into latent tokens: a GridEncoder's ``pooling`` ("patch": one linear map per
    patch token; "perceiver"), a MeshEncoder's perceiver pooling."""
    return str(getattr(encoder, "pooling", "perceiver"))


def shared_encoder(build: Callable[[str], nn.Module], names: Sequence[str]) -> DatasetSwitch:
    """Per-dataset encoders from ``build(name)`` with one shared trunk (:data:`ENCODER_TRUNK`).

    Grid and mesh encoders mix: every dataset's stem is its own (a GridEncoder's patch embedding, a MeshEncoder's
    supernode message passing), the transformer blocks and final norm are shared by all, and the pooling into
    latent tokens by all that pool alike (:func:`pooling_of`): with ``pooling="patch"`` grids share their
    per-token projection and meshes their perceiver pooling; with ``"perceiver"`` one pooling serves all.
    """
    parts = {name: build(name) for name in check_dataset_names(names)}
    widths = {name: {"dim": p.dim, "depth": p.depth, "num_heads": p.num_heads, "mlp_ratio": p.mlp_ratio,
                     "latent_tokens": p.latent_tokens, "latent_dim": p.latent_dim} for name, p in parts.items()}
    if len({tuple(w.items()) for w in widths.values()}) > 1:
        raise ValueError(
            f"the datasets' encoders differ in their trunk's width, depth, heads or tokens {widths}: they must share "
            "a trunk (give model.grid_encoder and model.mesh_encoder the same dim, depth and num_heads)"
        )
    tie_trunks(parts, tuple(attr for attr in ENCODER_TRUNK if attr != "pool"))
    for pooling in dict.fromkeys(pooling_of(p) for p in parts.values()):
        tie_trunks({name: p for name, p in parts.items() if pooling_of(p) == pooling}, ("pool",))
    return DatasetSwitch(parts)


def shared_decoder(build: Callable[[str], nn.Module], names: Sequence[str]) -> DatasetSwitch:
    """Per-dataset decoders from ``build(name)`` with one shared trunk (:data:`DECODER_TRUNK`); heads differ."""
    parts = {name: build(name) for name in check_dataset_names(names)}
    tie_trunks(parts, DECODER_TRUNK)
    return DatasetSwitch(parts)


def batch_dataset(batch: Mapping, names: Sequence[str]) -> str:
    """The dataset a batch comes from (``batch['dataset']``: (B,) indices into ``names``, all equal)."""
    index = batch.get("dataset")
    if index is None:
        raise ValueError(
            "this model is trained on several datasets, but the batch has no 'dataset' entry: "
            "use upt_lightning.data.MultiDataModule"
        )
    index = torch.as_tensor(index).reshape(-1)
    first = int(index[0])
    if (index != first).any():
        raise ValueError(f"a batch mixes datasets {sorted(set(index.tolist()))}; each batch must come from one")
    if not 0 <= first < len(names):
        raise ValueError(f"batch['dataset']={first} is out of range for the datasets {list(names)}")
    return list(names)[first]


def dataset_specs(datasets: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """``datasets`` hyperparameter -> ``{name: {field_channels, grid_shape, encoder}}`` with checked entries
    (plain types, so checkpoints load with ``weights_only=True``)."""
    if not datasets:
        raise ValueError("datasets is empty: give at least one dataset, or None for a one-dataset model")
    out = {}
    for name, spec in datasets.items():
        unknown = set(spec) - {"field_channels", "grid_shape", "encoder"}
        if unknown or "field_channels" not in spec:
            raise ValueError(
                f"datasets[{name!r}] must give field_channels (and optionally grid_shape, encoder), got keys "
                f"{sorted(spec)}"
            )
        grid = spec.get("grid_shape")
        out[str(name)] = {
            "field_channels": validate_field_spec(spec["field_channels"]),
            "grid_shape": None if grid is None else tuple(int(g) for g in grid),
            "encoder": dict(spec.get("encoder") or {}),
        }
    return out
