"""Spectral loss over the spatial axes of physical fields on a regular grid."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from upt_lightning.fields import cat_fields
from upt_lightning.losses.checks import check_same_shape

Fields = Mapping[str, torch.Tensor] | torch.Tensor


def _as_tensors(pred: Fields, target: Fields) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides as ``(B, N, C)``, mappings concatenated in the key order of the first mapping."""
    reference = pred if isinstance(pred, Mapping) else target
    if not isinstance(reference, Mapping):
        return pred, target
    spec = {name: values.shape[-1] for name, values in reference.items()}
    return cat_fields(pred, spec), cat_fields(target, spec)


def spectral_loss(pred: Fields, target: Fields, grid_shape: Sequence[int]) -> torch.Tensor:
    """Mean squared difference of the spatial amplitude spectra of ``pred`` and ``target``.

    ``pred``, ``target``: physical fields ``(B, N, C)`` or ``{name: (B, N, C_f)}`` on a regular
    grid with ``N = prod(grid_shape)`` points in row-major order (not latents: the latent feature
    axis has no spatial meaning, so a spectrum over it measures nothing physical). With ``P = rfftn(pred)`` and
    ``T = rfftn(target)`` taken over the spatial axes of ``(B, *grid_shape, C)`` with
    ``norm="ortho"``::

        L = mean_{b, k, c} (|P[b, k, c]| - |T[b, k, c]|)**2

    the mean running over all ``B * prod(grid_shape[:-1]) * (grid_shape[-1] // 2 + 1) * C``
    coefficients of the half spectrum. Phases are ignored, so a shifted copy of the target scores
    0: use it next to a pointwise loss, to penalise lost or spurious energy per wavenumber.
    Returns a scalar.
    """
    pred, target = _as_tensors(pred, target)
    check_same_shape("spectral_loss", pred, target)
    grid_shape = tuple(int(size) for size in grid_shape)
    if pred.ndim != 3 or math.prod(grid_shape) != pred.shape[1]:
        raise ValueError(
            f"spectral_loss needs fields (B, N, C) with N = prod(grid_shape); got shape {tuple(pred.shape)} "
            f"and grid_shape {grid_shape} ({math.prod(grid_shape)} points)"
        )
    # CPU FFTs do not support half precision; the spectra are small, so float32 costs little.
    if pred.dtype in (torch.float16, torch.bfloat16):
        pred, target = pred.float(), target.float()
    spatial_axes = tuple(range(1, len(grid_shape) + 1))
    shape = (pred.shape[0], *grid_shape, pred.shape[-1])
    pred_spectrum = torch.fft.rfftn(pred.reshape(shape), dim=spatial_axes, norm="ortho")
    target_spectrum = torch.fft.rfftn(target.reshape(shape), dim=spatial_axes, norm="ortho")
    return torch.mean((pred_spectrum.abs() - target_spectrum.abs()) ** 2)
