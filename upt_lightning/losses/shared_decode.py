"""L_inv_enc and L_inv_dec of one operator step from a single sampled decode (grid encoders).

Both inverse losses decode the operator's prediction: L_inv_enc at Q sampled points (with
gradients), L_inv_dec at every grid point (its backward at Q sampled points, see
``sampled_gradient.py``). When they decode the same latent at the same points, one decode of the Q
points with gradients serves both, and the full grid is decoded once without gradients: the
step's decoder work drops from (Q + N) points with backward to Q points with backward plus one
N-point forward. Called by ``compute_operator_loss_bundle``; the public loss functions are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from upt_lightning.fields import cat_fields, split_fields
from upt_lightning.losses.checks import check_decoding_points, check_latent
from upt_lightning.losses.inverse import reencoding_mse
from upt_lightning.losses.latent import masked_mse
from upt_lightning.losses.sampled_gradient import decode_sampled, draw_point_sample, take_points
from upt_lightning.query_sampling import check_strategy


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is b:
        return True
    return a is not None and b is not None and a.shape == b.shape and bool(torch.equal(a, b))


def shares_one_decode(encoder: nn.Module, input_positions: torch.Tensor, query_positions: torch.Tensor,
                      mask: torch.Tensor | None, meta: Mapping | None, num_queries: int | None,
                      sampled_gradient: bool) -> bool:
    """True when both inverse losses can use one decode: sampling on, an encoder that re-encodes
    only full point sets, the same decode points and the same padding mask for both losses."""
    if num_queries is None or not sampled_gradient or getattr(encoder, "accepts_point_subsets", False):
        return False
    return _same(input_positions, query_positions) and _same(mask, (meta or {}).get("mask"))


def inverse_losses_from_one_decode(
    input_fields, latent: torch.Tensor, decoder: nn.Module, encoder: nn.Module, positions: torch.Tensor,
    coords: torch.Tensor, meta: Mapping | None, num_queries: int, query_strategy: str = "uniform",
    grid_shape: Sequence[int] | None = None, *, generator: torch.Generator | None = None,
    per_sample: bool = False, mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Unweighted ``(L_inv_enc, L_inv_dec)``, or None when ``num_queries`` samples nothing.

    ``input_fields`` ``{name: (B, N, C_f)}`` or ``(B, N, C)`` (the fields to compare with),
    ``latent`` ``(B, T, D)``, ``positions`` ``(B, N, d)`` (where both losses decode), ``coords``
    ``(B, N, d)`` and ``meta`` (what the encoder reads), ``mask`` ``(B, N)`` the padding of both.
    L_inv_enc equals ``inverse_encoding_loss`` with the same generator state (the same points are
    drawn); L_inv_dec equals ``inverse_decoding_loss`` in value, and its gradient is the same kind of
    unbiased estimate, from the points L_inv_enc uses.
    """
    check_strategy(query_strategy)
    target = cat_fields(input_fields, decoder.field_channels)
    check_latent(latent, target.shape[0])
    if positions.shape[:2] != target.shape[:2]:
        raise ValueError(f"input_positions {tuple(positions.shape)} and input_fields {tuple(target.shape)} "
                         "must share (B, N)")
    check_decoding_points(positions, coords, latent)
    sample = draw_point_sample(positions, num_queries, query_strategy, grid_shape, generator=generator,
                               per_sample=per_sample, mask=mask)
    if sample is None:
        return None
    decoded, sampled = decode_sampled(decoder, positions, latent, sample)
    inv_enc = masked_mse(sampled, take_points(target, sample.index))
    inv_dec = reencoding_mse(encoder, split_fields(decoded, decoder.field_channels), coords, dict(meta or {}), latent)
    return inv_enc, inv_dec
