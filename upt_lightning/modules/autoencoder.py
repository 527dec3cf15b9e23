"""Stage 1: train the encoder and decoder as an autoencoder of physical fields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from upt_lightning.fields import channel_names, split_fields
from upt_lightning.losses import inverse_decoding_loss, inverse_encoding_loss
from upt_lightning.models.multi_dataset import batch_dataset
from upt_lightning.modules.base import UPTModuleBase
from upt_lightning.modules.dataset_logs import per_dataset_logs
from upt_lightning.modules.evaluation import OneStepEvaluation, without_padding
from upt_lightning.modules.optim import OptimSettings
from upt_lightning.query_sampling import QuerySampling


class AutoencoderModule(UPTModuleBase):
    """Encoder + decoder trained to reconstruct fields (stage 1).

    Loss = ``inverse_encoding_loss`` of the encoded input at sampled queries (reconstruction, weight 1)
    + ``lambda_cycle * inverse_decoding_loss`` (decode, re-encode, compare latents: cycle consistency).
    Validation reports reconstruction errors in physical units at all points (``val/nrmse`` ...).
    Arguments beyond ``lambda_cycle`` are those of :class:`UPTModuleBase`.
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
        lambda_cycle: float = 0.1,
        sampling: QuerySampling | Mapping[str, Any] | None = None,
        optim: OptimSettings | Mapping[str, Any] | None = None,
        seed: int = 0,
        nan_policy: Literal["raise", "skip"] = "raise",
    ):
        if lambda_cycle < 0:  # checked before the models are built, so this message comes first
            raise ValueError(f"lambda_cycle must be >= 0, got {lambda_cycle}")
        super().__init__(field_channels, coord_dim, grid_shape, encoder, decoder, latent_tokens, latent_dim,
                         datasets, sampling, optim, seed, nan_policy)
        sampling, optim = self.sampling, self.optim_settings  # stored as mappings (save_init_arguments)
        grid_shape = None if grid_shape is None else [int(size) for size in grid_shape]  # a list reads back alike
        self.save_init_arguments()
        if self.dataset_specs is None:
            self.val_eval, self.test_eval = self._reconstruction_metrics()
            return
        # One pair of reconstruction metrics per dataset (its channels and grid); the active pair is the one
        # val_eval/test_eval name (see on_dataset_activated).
        self.dataset_evals = torch.nn.ModuleDict()
        for name in self.dataset_names:
            self.activate_dataset(name)
            self.dataset_evals[name] = torch.nn.ModuleList(self._reconstruction_metrics())
        self.activate_dataset(self.dataset_names[0])
        self.val_eval, self.test_eval = self.dataset_evals[self.dataset_names[0]]

    def _reconstruction_metrics(self) -> tuple[OneStepEvaluation, OneStepEvaluation]:
        """(val, test) reconstruction metrics of the active dataset's channels and grid."""
        names = channel_names(self.field_spec)
        return (OneStepEvaluation(self.num_channels, self.grid_shape, names),
                OneStepEvaluation(self.num_channels, self.grid_shape, names))

    def on_dataset_activated(self, previous: str, name: str) -> None:
        evals = getattr(self, "dataset_evals", None)
        if evals is not None and name in evals:
            self.val_eval, self.test_eval = evals[name]

    def forward(self, fields: torch.Tensor, coords: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Raw fields (B, N, C) at raw coords (B, N, d) -> raw reconstruction (B, N, C)."""
        norm = self.normalizer
        points = norm.normalize_coords(coords)
        latent = self.encode(norm.normalize_fields(fields), points, self.encoder_meta(mask))
        return norm.denormalize_fields(self.decode(latent, points))

    def training_step(self, batch, batch_idx):
        b = self.prepare_batch(batch)
        latent = self.encode(b.fields, b.coords, b.meta)
        sampling = dict(num_queries=self.sampling.num_queries, query_strategy=self.sampling.strategy,
                        grid_shape=self.grid_shape)
        generator = self.query_generator()
        per_sample = self.sampling.per_sample
        recon = inverse_encoding_loss(
            split_fields(b.fields, self.field_spec), latent, self.decoder, b.coords, 1.0, **sampling,
            generator=generator, per_sample=per_sample, mask=b.mask,
        )
        loss = recon
        logs = {"train/L_recon": recon}
        if self.hparams.lambda_cycle > 0:
            cycle = inverse_decoding_loss(
                latent, self.decoder, self.encoder, b.coords, b.coords, b.meta, 1.0, **sampling,
                generator=generator, per_sample=per_sample,
            )
            loss = loss + self.hparams.lambda_cycle * cycle
            logs["train/L_cycle"] = cycle
        components = {name.removeprefix("train/"): value for name, value in logs.items()}
        if not self.loss_is_usable(loss, components, batch, batch_idx):
            return None  # nan_policy=skip: Lightning runs no backward and no update for this batch
        logs["train/loss"] = loss
        self.log_dict(logs, prog_bar=False, batch_size=b.fields.shape[0])
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=b.fields.shape[0])
        return loss

    def _evaluate(self, batch, evaluation: OneStepEvaluation) -> None:
        batch = without_padding(batch)
        if batch is None:
            return
        b = self.prepare_batch(batch)
        recon = self.decode(self.encode(b.fields, b.coords, b.meta), b.coords)
        evaluation.update(self.normalizer.denormalize_fields(recon), b.raw_fields, mask=b.mask)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        # Loaders come in pairs (one-step, rollout) per dataset; the autoencoder reads the one-step ones.
        if dataloader_idx % 2 == 0:
            self._evaluate_batch(batch, "val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if dataloader_idx % 2 == 0:
            self._evaluate_batch(batch, "test")

    def _evaluate_batch(self, batch, stage: str) -> None:
        if self.dataset_specs is not None:
            self.activate_dataset(batch_dataset(batch, self.dataset_names))
        self._evaluate(batch, self.val_eval if stage == "val" else self.test_eval)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self._epoch_logs("val"))

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._epoch_logs("test"))

    def _epoch_logs(self, stage: str) -> dict[str, torch.Tensor]:
        if self.dataset_specs is None:
            return (self.val_eval if stage == "val" else self.test_eval).compute_and_reset(stage)
        index = 0 if stage == "val" else 1
        return per_dataset_logs(
            stage, self.dataset_names, lambda name: self.dataset_evals[name][index].compute_and_reset(stage)
        )
