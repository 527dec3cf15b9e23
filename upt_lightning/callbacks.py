"""Training callbacks."""

from __future__ import annotations

import logging
import time

import lightning.pytorch as pl

from upt_lightning.data.latent_cache import LatentCache
from upt_lightning.losses import compute_inverse_loss_curriculum_weight

log = logging.getLogger("upt_lightning.callbacks")


class InverseLossCurriculum(pl.Callback):
    """Ramp the inverse-loss weights in, epoch by epoch, with the seed's formula.

    At each training epoch start the module's ``inverse_weights`` become
    ``compute_inverse_loss_curriculum_weight(epoch, base, warmup_epochs, max_weight)`` for
    ``lambda_inv_enc`` and ``lambda_inv_dec``. Note the formula's two quirks (kept on purpose):
    the weight is still 0 at ``epoch == warmup_epochs`` (the ramp starts from zero there), and it
    reaches ``min(base, max_weight)`` at ``epoch == 2 * warmup_epochs``.

    The weights are a pure function of the epoch, which Lightning restores on resume, so a
    resumed run gets exactly the weights of an uninterrupted one. ``warmup_epochs`` and
    ``max_weight`` default to the module's ``inverse_loss_warmup_epochs`` / ``inverse_loss_max_weight``.
    """

    def __init__(self, warmup_epochs: int | None = None, max_weight: float | None = None):
        if warmup_epochs is not None and warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if max_weight is not None and max_weight < 0:
            raise ValueError(f"max_weight must be >= 0, got {max_weight}")
        self.warmup_epochs = warmup_epochs
        self.max_weight = max_weight

    def weights_for_epoch(self, pl_module: pl.LightningModule, epoch: int) -> dict[str, float]:
        hp = pl_module.hparams
        warmup = hp.inverse_loss_warmup_epochs if self.warmup_epochs is None else self.warmup_epochs
        cap = hp.inverse_loss_max_weight if self.max_weight is None else self.max_weight
        return {
            name: compute_inverse_loss_curriculum_weight(epoch, float(hp[name]), int(warmup), float(cap))
            for name in ("lambda_inv_enc", "lambda_inv_dec")
        }

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not hasattr(pl_module, "inverse_weights"):
            raise TypeError(
                f"InverseLossCurriculum needs a module with inverse-loss weights (OperatorModule), "
                f"got {type(pl_module).__name__}: remove the callback for this stage"
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        weights = self.weights_for_epoch(pl_module, trainer.current_epoch)
        pl_module.inverse_weights = weights
        log.info("epoch %d: inverse-loss weights %s", trainer.current_epoch, weights)


class LatentCacheCallback(pl.Callback):
    """Serve stage 2's training batches from a :class:`LatentCache` of the frozen encoder.

    At the fit's setup (before any loader is requested; the module moved to its device, with the
    stage-1 normalisation statistics) every training window of the DataModule is encoded once, and
    the DataModule's ``train_dataloader`` serves the cache from then on. Going through the
    DataModule keeps Lightning in charge of the loader: under DDP it adds its distributed sampler,
    and every rank encodes all windows and reads its share. The items leave the fields out when no
    loss term reads them (``OperatorModule.training_reads_fields``), so no data file is read while
    training. ``batch_size`` of the encoding pass defaults to the DataModule's. The cache is
    dropped when the fit ends.
    """

    def __init__(self, batch_size: int | None = None):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be None or >= 1, got {batch_size}")
        self.batch_size = batch_size

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Not on_fit_start: configure_optimizers (estimated_stepping_batches) may load the train loader before it.
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "latent_cache"):
            raise TypeError(
                "LatentCacheCallback needs the training data as a GridDataModule or MeshDataModule "
                "(trainer.fit(model, datamodule=...)), not plain dataloaders"
            )
        if not hasattr(pl_module, "training_reads_fields"):
            raise TypeError(
                f"LatentCacheCallback caches stage-2 latents (OperatorModule), got {type(pl_module).__name__}"
            )
        fields = pl_module.training_reads_fields()
        # The strategy moves the module to this device next anyway; encoding there is what makes the build fast.
        pl_module.to(trainer.strategy.root_device)
        start = time.perf_counter()
        datamodule.latent_cache = LatentCache.build(
            datamodule.train_set, pl_module, batch_size=self.batch_size or datamodule.hparams.batch_size, fields=fields
        )
        latents = datamodule.latent_cache.latents
        log.info("latent cache: %d training windows encoded in %.1f s (%.0f MB of latents); items %s",
                 latents.shape[0], time.perf_counter() - start, latents.numel() * latents.element_size() / 2**20,
                 "with fields (a loss term reads them)" if fields else "without fields (no file reads)")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and getattr(trainer.datamodule, "latent_cache", None) is not None:
            trainer.datamodule.latent_cache = None
