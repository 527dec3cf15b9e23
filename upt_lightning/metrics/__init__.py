"""Physical-space error metrics with PDEBench's definitions, as DDP-ready torchmetrics.

``FieldErrorMetrics`` measures one predicted frame, ``RolloutErrorMetrics`` every step of a
rollout; both take raw (de-normalised) fields ``(..., N, C)``, a ``grid_shape`` for grids
(N = prod(grid_shape), row-major) or None for meshes, and an optional padding mask (B, N)
with True at real points. Where these differ from PDEBench's ``metric_func`` the reason is
given beside the code: ``accumulator`` (averaging over batches), ``sample_errors`` (bRMSE in
3D, nRMSE of all-zero targets, cRMSE on meshes) and ``spectrum`` (fRMSE in 2D and 3D).
"""

from upt_lightning.metrics.field_metrics import FieldErrorMetrics
from upt_lightning.metrics.rollout_metrics import RolloutErrorMetrics

__all__ = ["FieldErrorMetrics", "RolloutErrorMetrics"]
