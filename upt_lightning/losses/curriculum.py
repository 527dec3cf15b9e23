"""The seed's curriculum for the weights of the two inverse losses."""

from __future__ import annotations

from upt_lightning.losses.checks import check_non_negative_int, check_weight

# The seed's warm-up and cap: the defaults of every caller that schedules the weights (the bundle, OperatorLoss).
WARMUP_EPOCHS = 15
MAX_WEIGHT = 0.05


def compute_inverse_loss_curriculum_weight(
    epoch: int,
    base_weight: float,
    warmup_epochs: int = WARMUP_EPOCHS,
    max_weight: float = MAX_WEIGHT,
) -> float:
    """Weight of an inverse loss at ``epoch`` (the seed's formula, unchanged).

    * ``epoch < warmup_epochs``: 0 (pure forward training);
    * ``warmup_epochs <= epoch < 2 * warmup_epochs``:
      ``min(base_weight * (epoch - warmup_epochs) / warmup_epochs, max_weight)``. The ramp starts
      from zero, so the weight is still **0 at epoch == warmup_epochs** and the loss first counts
      one epoch later;
    * afterwards: ``min(base_weight, max_weight)``; ``max_weight`` caps the weight throughout.

    Example (base 0.01, warmup 5, max 0.05): epochs 4, 5, 6, 9, 10 give 0, 0, 0.002, 0.008, 0.01.
    ``epoch`` counts epochs; the seed's separate ``inverse_loss_frequency`` counts *batches*.
    """
    epoch = check_non_negative_int("epoch", epoch)
    warmup_epochs = check_non_negative_int("warmup_epochs", warmup_epochs)
    base_weight = check_weight("base_weight", base_weight)
    max_weight = check_weight("max_weight", max_weight)
    if epoch < warmup_epochs:
        return 0.0
    elif epoch < warmup_epochs * 2:
        progress = (epoch - warmup_epochs) / warmup_epochs
        return min(base_weight * progress, max_weight)
    else:
        return min(base_weight, max_weight)
