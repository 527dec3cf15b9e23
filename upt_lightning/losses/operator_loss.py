"""The operator stage's loss: the one owner of every term's weight and of when the inverse terms apply."""

from __future__ import annotations

from collections.abc import Mapping

from upt_lightning.losses.bundle import (
    CURRICULUM_WEIGHT_KEYS,
    INVERSE_WEIGHT_KEYS,
    TERM_WEIGHT_KEYS,
    LossBundle,
    compute_operator_loss_bundle,
)
from upt_lightning.losses.checks import check_non_negative_int, check_weight
from upt_lightning.losses.curriculum import compute_inverse_loss_curriculum_weight


class OperatorLoss:
    """Base weights of the loss terms, and the schedule of the two inverse terms and the conservation term.

    The effective weight of a scheduled term at a training batch is decided here and nowhere else:

    * no epoch set (no curriculum): its base weight;
    * after :meth:`set_epoch`: ``compute_inverse_loss_curriculum_weight(epoch, base, warmup_epochs,
      max_weight)`` (0 before the warm-up and at its end, then a ramp to ``min(base, max_weight)``);
    * the inverse terms only: 0 on batches with ``batch_idx % inverse_frequency != 0``, and with
      ``use_inverse`` False.

    The other terms (forward, rollout, spectral) always have their base weight. The curriculum callback
    sets the epoch whenever training starts or resumes (also in the middle of an epoch) and at every
    epoch start; the LightningModule asks :meth:`weights` for each batch and calls the bundle through
    :meth:`__call__`.

    Args:
        weights: base weights by key (``lambda_forward``, ``lambda_inv_enc``, ...; missing keys are 0
            except ``lambda_forward``, which defaults to 1).
        inverse_frequency: the inverse terms run on every N-th *batch* (the seed's frequency counts batches).
        warmup_epochs, max_weight: the curriculum's warm-up and cap.
        use_inverse: False switches both inverse terms off whatever their weights.
    """

    def __init__(self, weights: Mapping[str, float], inverse_frequency: int = 1, warmup_epochs: int = 0,
                 max_weight: float = 0.05, use_inverse: bool = True):
        unknown = sorted(set(weights) - set(TERM_WEIGHT_KEYS))
        if unknown:
            raise ValueError(f"unknown loss weight keys {unknown}; known keys are {list(TERM_WEIGHT_KEYS)}")
        defaults = {key: 1.0 if key == "lambda_forward" else 0.0 for key in TERM_WEIGHT_KEYS}
        self.base = {key: check_weight(f"loss.{key}", value) for key, value in {**defaults, **weights}.items()}
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
        out = {}
        for key in CURRICULUM_WEIGHT_KEYS:
            base = 0.0 if key in INVERSE_WEIGHT_KEYS and not self.use_inverse else self.base[key]
            if self.epoch is not None:
                base = compute_inverse_loss_curriculum_weight(self.epoch, base, self.warmup_epochs, self.max_weight)
            out[key] = base
        return out

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
