"""Loss functions of the operator stage (the seed's names and argument order).

Pure functions of tensors, plus the models they decode or re-encode with:

* ``forward_loss``, ``rollout_loss``: latent MSEs; ``masked_mse``: MSE over real points only;
* ``spectral_loss``: amplitude spectra over the spatial axes of physical fields;
* ``inverse_encoding_loss``, ``inverse_decoding_loss``: UPT's inverse losses;
* ``compute_inverse_loss_curriculum_weight``: the seed's warmup schedule of their weights;
* ``compute_operator_loss_bundle`` -> ``LossBundle``: all weighted terms of one step;
* ``OperatorLoss``: the base weights, the inverse terms' batch frequency and curriculum: the one
  place that decides each term's effective weight at a batch, calling the bundle (whose own
  ``weights`` and ``current_epoch`` go through it too).
"""

from upt_lightning.losses.bundle import LossBundle, compute_operator_loss_bundle
from upt_lightning.losses.curriculum import compute_inverse_loss_curriculum_weight
from upt_lightning.losses.inverse import inverse_decoding_loss, inverse_encoding_loss
from upt_lightning.losses.latent import forward_loss, masked_mse, rollout_loss
from upt_lightning.losses.operator_loss import OperatorLoss
from upt_lightning.losses.spectral import spectral_loss

__all__ = [
    "LossBundle",
    "OperatorLoss",
    "compute_inverse_loss_curriculum_weight",
    "compute_operator_loss_bundle",
    "forward_loss",
    "inverse_decoding_loss",
    "inverse_encoding_loss",
    "masked_mse",
    "rollout_loss",
    "spectral_loss",
]
