"""The operator stage's loss: the one place that decides every term's weight at a training batch, and
when the inverse terms apply (with the bundle's defaults and curriculum, bundle.py)."""

from __future__ import annotations

from collections.abc import Mapping

from upt_lightning.losses.bundle import (
    CURRICULUM_WEIGHT_KEYS,
    INVERSE_WEIGHT_KEYS,
    LossBundle,
    base_weights,
    compute_operator_loss_bundle,
    curriculum_weights,
)
from upt_lightning.losses.checks import check_non_negative_int, check_weight
from upt_lightning.losses.curriculum import MAX_WEIGHT, WARMUP_EPOCHS


class OperatorLoss:
    """Base weights of the loss terms, and the schedule of the two inverse terms and the conservation term.

    The effective weight of a scheduled term at a training batch is decided here and nowhere else:

    * no epoch set (no curriculum): its base weight;
    * after :meth:`set_epoch`: ``compute_inverse_loss_curriculum_weight(epoch, base, warmup_epochs,
      max_weight)`` (0 before the warm-up and at its end, then a ramp to ``min(base, max_weight)``);
    * the inverse terms only: 0 on batches with ``batch_idx % inverse_frequency != 0``, and with
      ``use_inverse`` False.

    The other terms (forward, rollout, spectral) always have their base weight. The defaults and the
    curriculum are the bundle's own (:func:`base_weights`, :func:`curriculum_weights`), so training and
    ``compute_operator_loss_bundle(weights=..., current_epoch=...)`` weigh alike. The curriculum callback
    sets the epoch whenever training starts or resumes (also in the middle of an epoch) and at every
    epoch start; the LightningModule asks :meth:`weights` for each batch and calls the bundle through
    :meth:`__call__`.

    Args:
        weights: base weights by key (``lambda_forward``, ``lambda_inv_enc``, ...; missing keys are 0
            except ``lambda_forward``, which defaults to 1).
        inverse_frequency: the inverse terms run on every N-th *batch* (the seed's frequency counts batches).
        warmup_epochs, max_weight: the curriculum's warm-up and cap (default: the seed's 15 and 0.05).
        use_inverse: False switches both inverse terms off whatever their weights.
    """

    def __init__(self, weights: Mapping[str, float], inverse_frequency: int = 1, warmup_epochs: int = WARMUP_EPOCHS,
                 max_weight: float = MAX_WEIGHT, use_inverse: bool = True):
        self.base = base_weights(weights)
        self.inverse_frequency = check_non_negative_int("loss.inverse_loss_frequency", inverse_frequency)
        if self.inverse_frequency < 1:
            raise ValueError(f"loss.inverse_loss_frequency must be >= 1 (every N batches), got {inverse_frequency}")
        self.warmup_epochs = check_non_negative_int("loss.inverse_loss_warmup_epochs", warmup_epochs)
        self.max_weight = check_weight("loss.inverse_loss_max_weight", max_weight)
        self.use_inverse = bool(use_inverse)
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Follow the curriculum from ``epoch`` on (the training epoch in progress)."""
        self.epoch = check_non_negative_int("epoch", epoch)

    def scheduled_weights(self) -> dict[str, float]:
        """The curriculum's weights of the current epoch, before the batch frequency:
        ``{lambda_inv_enc, lambda_inv_dec, lambda_conservation: ...}``."""
        base = {key: 0.0 if key in INVERSE_WEIGHT_KEYS and not self.use_inverse else self.base[key]
                for key in CURRICULUM_WEIGHT_KEYS}
        return base if self.epoch is None else curriculum_weights(base, self.epoch, self.warmup_epochs, self.max_weight)

    def inverse_weights(self) -> dict[str, float]:
        """The inverse weights of the current epoch, before the batch frequency: ``{lambda_inv_enc: ..., ...}``."""
        scheduled = self.scheduled_weights()
        return {key: scheduled[key] for key in INVERSE_WEIGHT_KEYS}

    def inverse_runs(self, batch_idx: int) -> bool:
        """Whether batch ``batch_idx`` of the epoch is one on which the inverse terms run."""
        return self.use_inverse and batch_idx % self.inverse_frequency == 0

    def weights(self, batch_idx: int) -> dict[str, float]:
        """Effective weight of every term at batch ``batch_idx`` of the current epoch."""
        out = dict(self.base)
        now = self.inverse_runs(batch_idx)
        for key, value in self.scheduled_weights().items():
            out[key] = value if now or key not in INVERSE_WEIGHT_KEYS else 0.0
        return out

    def __call__(self, batch_idx: int, **inputs) -> LossBundle:
        """:func:`compute_operator_loss_bundle` of ``inputs`` with this batch's weights."""
        return compute_operator_loss_bundle(weights=self.weights(batch_idx), current_epoch=None, **inputs)
