"""The operator stage's loss: the one place that decides every term's weight at a training batch, and
when the inverse terms apply (with the bundle's defaults and curriculum, bundle.py)."""

from __future__ import annotations


from upt_lightning.losses.bundle import (
    CURRICULUM_WEIGHT_KEYS,
    INVERSE_WEIGHT_KEYS,
    LossBundle,
    base_weights,
    compute_operator_loss_bundle,
    curriculum_weights,
)
from upt_lightning.losses.checks import check_non_negative_int, check_weight


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

    Its arguments are the ``loss`` config group's keys (conf/loss/default.yaml, built by Hydra's ``instantiate``),
    and their defaults are the project's; the module stores :meth:`as_dict` among its hyperparameters.

    Args:
        lambda_forward, lambda_inv_enc, lambda_inv_dec, lambda_rollout, lambda_spectral, lambda_conservation:
            base weights of the bundle's terms (>= 0).
        lambda_recon: reconstruction of the encoded input, in end-to-end training only (the module adds it).
        use_inverse_losses: False switches both inverse terms off whatever their weights.
        inverse_loss_frequency: the inverse terms run on every N-th *batch* (the seed's frequency counts batches).
        inverse_loss_warmup_epochs, inverse_loss_max_weight: the curriculum's warm-up and cap; a scheduled
            weight above the cap is refused (the run would silently train with the cap).
        sampled_inverse_gradient: with query sampling and a grid encoder, L_inv_dec backpropagates through the
            sampled points only (same value, unbiased gradient; see ``inverse_decoding_loss``).
    """

    def __init__(self, lambda_forward: float = 1.0, lambda_inv_enc: float = 0.01, lambda_inv_dec: float = 0.01,
                 lambda_rollout: float = 0.0, lambda_spectral: float = 0.0, lambda_conservation: float = 0.0,
                 lambda_recon: float = 1.0, use_inverse_losses: bool = True, inverse_loss_frequency: int = 1,
                 inverse_loss_warmup_epochs: int = 5, inverse_loss_max_weight: float = 0.05,
                 sampled_inverse_gradient: bool = True):
        self.base = base_weights(dict(
            lambda_forward=lambda_forward, lambda_inv_enc=lambda_inv_enc, lambda_inv_dec=lambda_inv_dec,
            lambda_rollout=lambda_rollout, lambda_spectral=lambda_spectral, lambda_conservation=lambda_conservation))
        self.lambda_recon = check_weight("loss.lambda_recon", lambda_recon)
        self.inverse_frequency = check_non_negative_int("loss.inverse_loss_frequency", inverse_loss_frequency)
        if self.inverse_frequency < 1:
            raise ValueError(f"loss.inverse_loss_frequency must be >= 1 (every N batches), got {inverse_loss_frequency}")
        self.warmup_epochs = check_non_negative_int("loss.inverse_loss_warmup_epochs", inverse_loss_warmup_epochs)
        self.max_weight = check_weight("loss.inverse_loss_max_weight", inverse_loss_max_weight)
        self.use_inverse = bool(use_inverse_losses)
        for key in CURRICULUM_WEIGHT_KEYS:
            if key in INVERSE_WEIGHT_KEYS and not self.use_inverse:
                continue  # switched off: its weight is never used
            if self.base[key] > self.max_weight:
                raise ValueError(
                    f"loss.{key}={self.base[key]} exceeds loss.inverse_loss_max_weight={self.max_weight}, which caps "
                    f"it: the run would train with {self.max_weight}. Raise the cap "
                    f"(loss.inverse_loss_max_weight={self.base[key]}) or lower the weight")
        self.sampled_gradient = bool(sampled_inverse_gradient)
        self.epoch: int | None = None

    def as_dict(self) -> dict:
        """The constructor's arguments as plain values (what checkpoints store)."""
        return dict(**self.base, lambda_recon=self.lambda_recon, use_inverse_losses=self.use_inverse,
                    inverse_loss_frequency=self.inverse_frequency, inverse_loss_warmup_epochs=self.warmup_epochs,
                    inverse_loss_max_weight=self.max_weight, sampled_inverse_gradient=self.sampled_gradient)

    def reads_fields(self) -> bool:
        """Whether a term compares physical fields (inverse, spectral, conservation): a latent cache then has to
        serve the fields too."""
        inverse = self.use_inverse and (self.base["lambda_inv_enc"] > 0 or self.base["lambda_inv_dec"] > 0)
        return inverse or self.base["lambda_spectral"] > 0 or self.base["lambda_conservation"] > 0

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
