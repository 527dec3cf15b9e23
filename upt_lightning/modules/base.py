"""What the autoencoder and operator stages share: models, normalisation, batches, optimiser."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from upt_lightning.fields import cat_fields, split_fields, total_channels, validate_field_spec
from upt_lightning.models.multi_dataset import batch_dataset
from upt_lightning.models.builders import build_autoencoder_parts
from upt_lightning.models.upt import encoder_meta
from upt_lightning.modules.nonfinite import check_nan_policy
from upt_lightning.modules.surrogate import SurrogateModule
from upt_lightning.modules.optim import OptimSettings
from upt_lightning.modules.seeding import mix_seed
from upt_lightning.query_sampling import QuerySampling
from upt_lightning.settings import settings_of

log = logging.getLogger("upt_lightning.modules")


@dataclass
class PreparedBatch:
    """A batch in model units. fields (B, N, C); targets (B, K, N, C); coords (B, N, d) in [0, 1]^d;
    dt (B,) in frame units; mask (B, N) bool or None; meta for the encoder; raw_* in physical units."""

    fields: torch.Tensor
    targets: torch.Tensor
    coords: torch.Tensor
    dt: torch.Tensor
    mask: torch.Tensor | None
    meta: dict
    raw_fields: torch.Tensor
    raw_targets: torch.Tensor


def normalised_batch(batch: Mapping[str, torch.Tensor], normalizer, field_spec: Mapping[str, int]) -> PreparedBatch:
    """A DataModule batch (fields (B, N, C), targets (B, K, N, C), coords (B, N, d), dt, mask (B, N) or absent)
    checked against ``field_spec`` and normalised by ``normalizer``; ``meta`` is left empty."""
    channels = total_channels(field_spec)
    raw_fields = batch["fields"].float()
    raw_targets = batch["targets"].float()
    if raw_fields.ndim != 3 or raw_fields.shape[-1] != channels:
        raise ValueError(f"batch['fields'] must be (B, N, {channels}) for fields {dict(field_spec)}, "
                         f"got {tuple(raw_fields.shape)}")
    if raw_targets.ndim != 4 or raw_targets.shape[2:] != raw_fields.shape[1:]:
        raise ValueError(f"batch['targets'] must be (B, K, N, C) matching fields {tuple(raw_fields.shape)}, "
                         f"got {tuple(raw_targets.shape)}")
    return PreparedBatch(
        fields=normalizer.normalize_fields(raw_fields),
        targets=normalizer.normalize_fields(raw_targets),
        coords=normalizer.normalize_coords(batch["coords"].float()),
        dt=normalizer.normalize_dt(batch["dt"]).reshape(-1).expand(raw_fields.shape[0]),
        mask=batch.get("mask"),
        meta={},
        raw_fields=raw_fields,
        raw_targets=raw_targets,
    )


class UPTModuleBase(SurrogateModule):
    """Encoder + decoder + normaliser + the plumbing both training stages need.

    Args:
        field_channels: ordered field spec, e.g. {"u": 1, "v": 1}.
        coord_dim: spatial dimension d of the points.
        grid_shape: grid shape for grid data (row-major points), None for meshes.
        encoder: {"kind": "grid"|"mesh", **kwargs} for GridEncoder / MeshEncoder.
        decoder: kwargs for AnyPointDecoder.
        latent_tokens, latent_dim: latent shape (T, D) shared by all models.
        sampling: where the decoder losses are evaluated: a :class:`~upt_lightning.query_sampling.QuerySampling`
            or a mapping of its arguments (the ``sampling`` config group); default: every point.
        optim: the optimiser and schedule: an :class:`~upt_lightning.modules.optim.OptimSettings` or a mapping of
            its arguments (the ``optim`` config group with the stage's ``lr``); default: AdamW at 1e-3, cosine.
        seed: base seed of the query-sampling generator (combined with rank and batch index).
        datasets: one model over several datasets: ``{name: {field_channels, grid_shape, encoder}}`` (``encoder``:
            overrides of ``encoder`` for that dataset, e.g. its ``patch_size``; for a mesh dataset, ``grid_shape``
            None, beside a grid ``encoder``: its complete MeshEncoder settings, ``{"kind": "mesh", ...}``, see
            models/builders.py ``dataset_encoder``). Each dataset gets its own
            normaliser, encoder stem and decoder heads around shared trunks (models/multi_dataset.py); every
            batch names its dataset (``batch['dataset']``, from :class:`~upt_lightning.data.MultiDataModule`)
            and the module switches to it (:meth:`activate_dataset`). ``field_channels`` and ``grid_shape``
            are then those of the first dataset. None: one dataset, the arguments above.
        nan_policy: a NaN/Inf training loss either stops the fit with :class:`NonFiniteLossError` naming the
            step and the loss components ("raise"), or skips that batch's update ("skip", one process only;
            counted in ``train/skipped_steps``). See :mod:`upt_lightning.modules.nonfinite`.
    """

    def __init__(
        self,
        field_channels: Mapping[str, int],
        coord_dim: int,
        grid_shape: Sequence[int] | None = None,
        encoder: Mapping[str, Any] | None = None,
        decoder: Mapping[str, Any] | None = None,
        latent_tokens: int = 16,
        latent_dim: int = 32,
        datasets: Mapping[str, Mapping[str, Any]] | None = None,
        sampling: QuerySampling | Mapping[str, Any] | None = None,
        optim: OptimSettings | Mapping[str, Any] | None = None,
        seed: int = 0,
        nan_policy: Literal["raise", "skip"] = "raise",
    ):
        super().__init__()
        self.sampling = settings_of(QuerySampling, sampling, "sampling")
        self.optim_settings = settings_of(OptimSettings, optim, "optim")
        self.nan_policy = check_nan_policy(nan_policy)
        self.field_spec = validate_field_spec(field_channels)
        self.num_channels = total_channels(self.field_spec)
        self.grid_shape = tuple(int(s) for s in grid_shape) if grid_shape is not None else None
        self.coord_dim = int(coord_dim)
        self.normalizer, self.encoder, self.decoder, self.dataset_specs = build_autoencoder_parts(dict(
            field_channels=self.field_spec, coord_dim=self.coord_dim, grid_shape=self.grid_shape, encoder=encoder,
            decoder=decoder, latent_tokens=latent_tokens, latent_dim=latent_dim, datasets=datasets))
        self.active_dataset: str | None = None
        if self.dataset_specs is not None:
            self.active_dataset = next(iter(self.dataset_specs))  # the switches start on the first dataset too
            self._apply_dataset_spec(self.active_dataset)

    # --------------------------------------------------------------- datasets
    @property
    def dataset_names(self) -> list[str]:
        """The datasets of a multi-dataset model (config order); empty for a one-dataset model."""
        return list(self.dataset_specs or {})

    @property
    def active_index(self) -> int | None:
        """Index of the active dataset in :attr:`dataset_names` (the operator's conditioning); None for one."""
        return self.dataset_names.index(self.active_dataset) if self.dataset_specs else None

    def activate_dataset(self, name: str) -> None:
        """Route encoder, decoder, normaliser, field spec, grid and evaluation state to dataset ``name``."""
        if self.dataset_specs is None:
            raise ValueError("activate_dataset() needs a multi-dataset model (datasets=...)")
        if name not in self.dataset_specs:
            raise KeyError(f"unknown dataset {name!r}; this model was trained on {self.dataset_names}")
        if name == self.active_dataset:  # consecutive batches of one dataset switch nothing
            return
        previous = self.active_dataset
        for switch in (self.encoder, self.decoder, self.normalizer):
            switch.activate(name)
        self._apply_dataset_spec(name)
        self.active_dataset = name
        self.on_dataset_activated(previous, name)

    def _apply_dataset_spec(self, name: str) -> None:
        spec = self.dataset_specs[name]
        self.field_spec = dict(spec["field_channels"])
        self.num_channels = total_channels(self.field_spec)
        self.grid_shape = spec["grid_shape"]

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        super().setup(stage)  # the process group's exit, the NaN policy against the world size
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        if self.dataset_specs is not None:
            self._setup_datasets(datamodule)
            return
        data_spec = getattr(datamodule, "field_spec", None)
        if data_spec is not None and dict(data_spec) != self.field_spec:
            raise ValueError(
                f"the data's fields {dict(data_spec)} differ from the model's {self.field_spec}: "
                "use a checkpoint trained on this data, or train stage 1 again"
            )
        if not bool(self.normalizer.initialised) and getattr(datamodule, "stats", None) is not None:
            # A periodic decoder assumes one period maps onto [0, 1), which only data.period's statistics do.
            if getattr(self.decoder, "periodic", False) and getattr(datamodule, "period", None) is None:
                raise ValueError(
                    "the decoder is periodic (decoder.periodic=true) but the data give no period, so their "
                    "coordinates would not have period 1: set the DataModule's period (e.g. period: 1.0 for the "
                    "unit square) or build the decoder with periodic=false"
                )
            self.normalizer.set_stats(datamodule.stats, dt=getattr(datamodule, "dt", None))
            log.info("normalisation statistics taken from the training split")

    def _setup_datasets(self, datamodule) -> None:
        """Check a multi-dataset DataModule against the model's datasets and take each one's statistics."""
        data_specs = getattr(datamodule, "field_spec_by_dataset", None)
        if data_specs is None:
            raise ValueError(
                f"this model was trained on the datasets {self.dataset_names}; give it a MultiDataModule over them"
            )
        expected = {name: spec["field_channels"] for name, spec in self.dataset_specs.items()}
        given = {name: dict(spec) for name, spec in data_specs.items()}
        if given != expected:
            raise ValueError(f"the data's datasets and fields {given} differ from the model's {expected}")
        for name in self.dataset_names:
            normalizer = self.normalizer.parts[name]
            if not bool(normalizer.initialised):
                normalizer.set_stats(datamodule.stats_by_dataset[name], dt=datamodule.dt_by_dataset[name])
        log.info("normalisation statistics taken from each dataset's training split")

    # --------------------------------------------------------------- batches
    def prepare_batch(self, batch: Mapping[str, torch.Tensor]) -> PreparedBatch:
        """Normalise a DataModule batch: fields (B, N, C), targets (B, K, N, C), coords (B, N, d), dt (B,).

        A multi-dataset model first switches to the batch's dataset (``batch['dataset']``)."""
        if self.dataset_specs is not None:
            self.activate_dataset(batch_dataset(batch, self.dataset_names))
        prepared = normalised_batch(batch, self.normalizer, self.field_spec)
        prepared.meta = self.encoder_meta(prepared.mask)
        return prepared

    def encoder_meta(self, mask: torch.Tensor | None) -> dict:
        """What the encoder needs beside fields and points (models/upt.py, ``encoder_meta``)."""
        return encoder_meta(self.grid_shape, mask)

    # ---------------------------------------------------------------- models
    def encode(self, fields: torch.Tensor, coords: torch.Tensor, meta: Mapping | None = None) -> torch.Tensor:
        """Normalised fields (B, N, C) at coords (B, N, d) -> latent (B, T, D)."""
        return self.encoder(split_fields(fields, self.field_spec), coords, dict(meta or {}))

    def decode(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Latent (B, T, D) at points (B, Q, d) -> normalised fields (B, Q, C). Outside training (validation,
        test, rollouts of a module in eval mode) points shared by every sample are decoded on the decoder's
        shared path; a training step never compares points, so it reads nothing back from the device."""
        return cat_fields(self.decoder(points, latent, share_points=not self.training), self.field_spec)

    def query_generator(self, stream: int = 0) -> torch.Generator:
        """A fresh generator seeded by (seed, global rank, training batch index across epochs).

        Reproducible (a resumed run restores the batch index), different on every rank, and different for
        every batch, including the micro-batches of one gradient-accumulation step (which share global_step).
        ``stream`` > 0 gives another independent stream of the same batch (0: the query draws).
        """
        seed = int(self.hparams.seed)
        rank = batch = 0
        if self._trainer is not None:
            rank = self.global_rank
            batch = max(self.trainer.fit_loop.epoch_loop.total_batch_idx, 0)
        parts = (seed, rank, batch) if stream == 0 else (seed, rank, batch, stream)
        return torch.Generator().manual_seed(mix_seed(*parts))
