"""Training callbacks."""

from __future__ import annotations

import logging
import time

import lightning.pytorch as pl

from upt_lightning.data.latent_cache import LatentCache
from upt_lightning.losses import OperatorLoss
from upt_lightning.models.init_from import in_frozen_trunk
from upt_lightning.models.validation import DeferredFiniteChecks, defer_finite_checks, stop_deferring

log = logging.getLogger("upt_lightning.callbacks")


class InverseLossCurriculum(pl.Callback):
    """Ramp the inverse-loss weights in, epoch by epoch, with the seed's formula.

    The module's :class:`OperatorLoss` (``pl_module.operator_loss``) owns the weights; this callback tells it
    the training epoch in progress, whenever training starts or resumes and at every epoch start, so the
    inverse weights become ``compute_inverse_loss_curriculum_weight(epoch, base, warmup_epochs, max_weight)``
    for ``lambda_inv_enc`` and ``lambda_inv_dec``. Note the formula's two quirks (kept on purpose): the
    weight is still 0 at ``epoch == warmup_epochs`` (the ramp starts from zero), and it reaches
    ``min(base, max_weight)`` at ``epoch == 2 * warmup_epochs``.

    The weights are a pure function of the epoch, which Lightning restores on resume. A resume from a
    mid-epoch checkpoint (``every_n_train_steps``, a requeued job) skips ``on_train_epoch_start`` for the
    epoch in progress; ``on_train_start`` sets the epoch there, so a resumed run trains with exactly the
    weights of an uninterrupted one. The warm-up and the cap are the loss's own settings
    (``loss.inverse_loss_warmup_epochs``, ``loss.inverse_loss_max_weight``): this callback has none.
    """

    def _loss_of(self, pl_module: pl.LightningModule) -> OperatorLoss:
        loss = getattr(pl_module, "operator_loss", None)
        if not isinstance(loss, OperatorLoss):
            raise TypeError(
                f"InverseLossCurriculum needs a module with inverse-loss weights (OperatorModule), "
                f"got {type(pl_module).__name__}: remove the callback for this stage"
            )
        return loss

    def weights_for_epoch(self, pl_module: pl.LightningModule, epoch: int) -> dict[str, float]:
        """The inverse weights of ``epoch`` (before the batch frequency), without changing the module's epoch."""
        loss = self._loss_of(pl_module)
        current = loss.epoch
        loss.set_epoch(epoch)
        try:
            return loss.inverse_weights()
        finally:
            loss.epoch = current

    def _set_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, when: str) -> None:
        loss = self._loss_of(pl_module)
        if loss.epoch == trainer.current_epoch:
            return
        loss.set_epoch(trainer.current_epoch)
        log.info("epoch %d (%s): inverse-loss weights %s", trainer.current_epoch, when, loss.inverse_weights())

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._loss_of(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set_epoch(trainer, pl_module, "training starts")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set_epoch(trainer, pl_module, "epoch start")


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


class SyncFreeChecks(pl.Callback):
    """Keep host-device synchronisations out of the training step.

    The models check their inputs for NaN/Inf on every forward, and ``nan_policy=raise`` checks every loss:
    each check reads a value on the host, which waits for the accelerator to finish the queued work. Here
    both are recorded on the device instead and read together every ``every_n_steps`` steps, before every
    checkpoint is written, and at the end of each epoch, raising the same errors (the NaN count summed over
    the steps since the last read; the step of the first non-finite loss). ``"auto"``: every step on the CPU,
    where a read costs nothing and the message keeps the batch's statistics; every 50 steps on an
    accelerator. ``nan_policy=skip`` must know before the update, so its loss check stays per step.
    """

    def __init__(self, every_n_steps: int | str = "auto"):
        if every_n_steps != "auto" and (isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int)
                                        or every_n_steps < 1):
            raise ValueError(f"every_n_steps must be a positive integer or 'auto', got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self.interval = 1
        self.checks = DeferredFiniteChecks()
        self._token = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.every_n_steps == "auto":
            self.interval = 1 if trainer.strategy.root_device.type == "cpu" else 50
        else:
            self.interval = int(self.every_n_steps)

    def flush(self, pl_module: pl.LightningModule) -> None:
        """Read everything recorded so far (one host sync) and raise on the first problem."""
        self.checks.raise_if_any()
        if getattr(pl_module, "deferred_losses", None):
            pl_module.flush_loss_checks()

    def _stop_deferring(self) -> None:
        if self._token is not None:
            stop_deferring(self._token)
            self._token = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.interval > 1 and hasattr(pl_module, "flush_loss_checks"):
            pl_module.deferred_losses = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.interval > 1:
            self._token = defer_finite_checks(self.checks)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stop_deferring()
        if self.interval > 1 and trainer.global_step % self.interval == 0:
            self.flush(pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.flush(pl_module)  # no checkpoint is written over a problem that was recorded but not yet read

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flush(pl_module)
        pl_module.deferred_losses = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._stop_deferring()
        self.checks.counts.clear()
        if hasattr(pl_module, "deferred_losses"):
            pl_module.deferred_losses = None


class FinalValidation(pl.Callback):
    """Validate at the end of training also when ``check_val_every_n_epoch`` would skip that epoch.

    With ``check_val_every_n_epoch: k`` Lightning validates after epochs k, 2k, ...; a stage whose last epoch is
    not among them would end without validating its final weights, the ones a cosine schedule makes the best, and
    its best checkpoint would be an earlier one. This callback makes the last epoch (``max_epochs``) and a stop
    requested mid-epoch (``max_time``, or any ``trainer.should_stop``) validate as well, so sparse validation only
    drops the intermediate ones. It must run after Lightning's Timer in ``on_train_batch_end`` (which sets
    ``should_stop``): :func:`upt_lightning.pipeline.trainers.make_trainer` appends it to the trainer's callbacks
    after the Trainer is built, behind the Timer.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs > 0 and trainer.current_epoch >= max_epochs - 1:
            trainer.check_val_every_n_epoch = 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.should_stop:
            trainer.check_val_every_n_epoch = 1


class FreezeTrunk(pl.Callback):
    """Train only the stems and heads for the first ``epochs`` epochs of a model started from another's weights
    (``init_from``), then everything.

    Frozen (``requires_grad`` False, so they get no gradient and the optimiser skips them) are the parameters of
    ``parts`` that :func:`~upt_lightning.models.init_from.in_frozen_trunk` names: the encoder's and decoder's
    shared trunks (stage 1) and the operator's transformer blocks (stage 2). Stems, heads and the operator's
    input/output projections and conditioning keep training. The state is a function of the epoch, set at every
    epoch start and when training starts or resumes; one process only (DDP fixes the trainable set at its start).
    """

    def __init__(self, epochs: int, parts: tuple[str, ...]) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"FreezeTrunk epochs must be an integer >= 0, got {epochs!r}")
        self.epochs = epochs
        self.parts = tuple(parts)

    def _trunk(self, pl_module: pl.LightningModule) -> list:
        return [p for name, p in pl_module.named_parameters()
                if name.split(".", 1)[0] in self.parts and in_frozen_trunk(name)]

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        frozen = trainer.current_epoch < self.epochs
        params = self._trunk(pl_module)
        if any(p.requires_grad == frozen for p in params):
            for p in params:
                p.requires_grad_(not frozen)
            log.info("epoch %d: %s the loaded trunks (%d tensors of %s)%s", trainer.current_epoch,
                     "froze" if frozen else "unfroze", len(params), "/".join(self.parts),
                     f" until epoch {self.epochs}" if frozen else "")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer, pl_module)
