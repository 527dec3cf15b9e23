"""Training callbacks."""

from __future__ import annotations

import logging

import lightning.pytorch as pl

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
