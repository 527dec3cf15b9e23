"""UPT's inverse losses: decode-then-compare in physical space, re-encode-then-compare in latent space.

Both keep gradients flowing into ``latent``: with a frozen encoder/decoder (parameters that do not
require grad) they train whatever produced the latent, e.g. the latent operator. (The seed's implementation
evaluated them on the encoded *input* frame, so with a frozen autoencoder no trainable parameter
received a gradient from them.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from upt_lightning.fields import cat_fields, split_fields
from upt_lightning.losses.checks import check_decoding_points, check_latent, check_same_shape, check_weight
from upt_lightning.losses.latent import masked_mse
from upt_lightning.losses.sampled_gradient import decode_sampled, draw_point_sample
from upt_lightning.models.validation import allow_nonfinite
from upt_lightning.query_sampling import apply_query_sampling, check_strategy

log = logging.getLogger("upt_lightning.losses")
_reported_full_grid: set[tuple[str, int, bool]] = set()

Fields = Mapping[str, torch.Tensor] | torch.Tensor


def inverse_encoding_loss(
    input_fields: Fields,
    latent: torch.Tensor,
    decoder: nn.Module,
    input_positions: torch.Tensor,
    weight: float = 1.0,
    num_queries: int | None = None,
    query_strategy: str = "uniform",
    grid_shape: Sequence[int] | None = None,
    *,
    generator: torch.Generator | None = None,
    per_sample: bool = False,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``weight * MSE(decoder(positions, latent), input_fields at positions)``; scalar.

    ``input_fields`` ``{name: (B, N, C_f)}`` or ``(B, N, C)``, compared over all channels in the
    order of ``decoder.field_channels``; ``latent`` ``(B, T, D)``; ``input_positions``
    ``(B, N, d)``. With ``num_queries`` the comparison runs at a sample of the points (see
    ``apply_query_sampling`` for ``query_strategy``, ``grid_shape``, ``generator``,
    ``per_sample``). ``mask`` ``(B, N)`` bool (True = real point) makes the mean run over real
    points only and keeps padding out of the sample.
    """
    weight = check_weight("weight", weight)
    check_strategy(query_strategy)
    target = cat_fields(input_fields, decoder.field_channels)
    check_latent(latent, target.shape[0])
    positions, points_mask = input_positions, mask
    if num_queries is not None:
        sampled = apply_query_sampling(
            target, input_positions, num_queries, query_strategy, grid_shape,
            generator=generator, per_sample=per_sample, mask=mask,
        )
        target, positions = sampled[0], sampled[1]
        points_mask = sampled[2] if mask is not None else None
    elif input_positions.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"input_positions {tuple(input_positions.shape)} and input_fields {tuple(target.shape)} "
            "must share (B, N)"
        )
    decoded = cat_fields(decoder(positions, latent), decoder.field_channels)
    return weight * masked_mse(decoded, target, points_mask)


def _report_full_grid(encoder: nn.Module, num_queries: int, sampled_gradient: bool) -> None:
    key = (type(encoder).__name__, num_queries, sampled_gradient)
    if key not in _reported_full_grid:
        _reported_full_grid.add(key)
        if sampled_gradient:
            how = ("decodes it without gradients and backpropagates through num_queries=%d sampled points "
                   "(gradient scaled by N/Q: same loss value, unbiased gradient)")
        else:
            how = "decodes it with gradients at every point (sampled_gradient=False; num_queries=%d unused)"
        log.info("inverse_decoding_loss: %s re-encodes only the full grid (accepts_point_subsets is False), so it "
                 + how, key[0], num_queries)


def _sample_for_encoder(encoder, query_positions, coords, meta, num_queries, strategy, grid_shape, generator, per_sample):
    """Shrink positions, coords and ``meta['mask']`` to a sample the encoder can re-encode."""
    sampled = apply_query_sampling(
        query_positions, coords, num_queries, strategy, grid_shape,
        generator=generator, per_sample=per_sample, mask=meta.get("mask"),
    )
    positions, sampled_coords = sampled[0], sampled[1]
    if positions.shape[1] == coords.shape[1]:
        return query_positions, coords, meta
    if meta.get("supernode_idx") is not None:
        raise ValueError(
            "meta['supernode_idx'] indexes the full point set, so inverse_decoding_loss cannot re-encode a "
            "point subset with it; drop it from meta or set num_queries=None"
        )
    supernodes = getattr(encoder, "num_supernodes", 0)  # a RegionEncoder reads any number of points
    if positions.shape[1] < supernodes:
        raise ValueError(
            f"inverse_decoding_loss re-encodes subsets of {positions.shape[1]} points "
            f"(num_queries={num_queries}) but the encoder needs at least num_supernodes={supernodes}; "
            f"set num_queries >= {supernodes} or build the encoder with fewer supernodes"
        )
    # Every sampled point is real, so the subset needs no mask.
    return positions, sampled_coords, {key: value for key, value in meta.items() if key != "mask"}


def inverse_decoding_loss(
    latent: torch.Tensor,
    decoder: nn.Module,
    encoder: nn.Module,
    query_positions: torch.Tensor,
    coords: torch.Tensor,
    meta: Mapping | None,
    weight: float = 1.0,
    num_queries: int | None = None,
    query_strategy: str = "uniform",
    grid_shape: Sequence[int] | None = None,
    *,
    generator: torch.Generator | None = None,
    per_sample: bool = False,
    sampled_gradient: bool = True,
) -> torch.Tensor:
    """``weight * MSE(encoder(decoder(query_positions, latent), coords, meta), latent.detach())``.

    ``latent`` ``(B, T, D)``; ``query_positions`` and ``coords`` ``(B, N, d)`` are the same points
    (where to decode, and where the encoder reads the decoded fields); ``meta`` is passed to the
    encoder (``"grid_shape"``, ``"mask"`` ``(B, N)``). The target is detached, so the gradient
    reaches ``latent`` only through the decode-re-encode path.

    ``num_queries`` (``query_strategy``, ``grid_shape``, ``generator``, ``per_sample``; padding in
    ``meta["mask"]`` is never sampled) works in one of two ways:

    * encoders with ``accepts_point_subsets`` True (MeshEncoder): a sample of the points is
      decoded and re-encoded, with the mask cut down to the sample. Fewer sampled points than
      ``encoder.num_supernodes`` raise ValueError.
    * other encoders (GridEncoder, which needs the full grid): the full grid is decoded without
      gradients and re-encoded, and the decoder's backward runs only at the sampled points, their
      gradient scaled by N/Q (see ``losses/sampled_gradient.py``): the value is that of the dense
      loss, the gradient an unbiased estimate of it, at the decoder cost of Q points.
      ``sampled_gradient=False`` backpropagates through every point instead (logged once at INFO).

    ``num_queries=None`` decodes and re-encodes every point with exact gradients. Returns a scalar.
    """
    weight = check_weight("weight", weight)
    check_strategy(query_strategy)
    check_decoding_points(query_positions, coords, latent)
    meta = dict(meta or {})
    if num_queries is not None:
        if getattr(encoder, "accepts_point_subsets", False):
            query_positions, coords, meta = _sample_for_encoder(
                encoder, query_positions, coords, meta, num_queries, query_strategy, grid_shape, generator, per_sample
            )
        else:
            _report_full_grid(encoder, num_queries, sampled_gradient)
            sample = draw_point_sample(coords, num_queries, query_strategy, grid_shape, generator=generator,
                                       per_sample=per_sample, mask=meta.get("mask")) if sampled_gradient else None
            if sample is not None:
                decoded = decode_sampled(decoder, query_positions, latent, sample)[0]
                return weight * reencoding_mse(encoder, split_fields(decoded, decoder.field_channels), coords, meta,
                                               latent)
    return weight * reencoding_mse(encoder, decoder(query_positions, latent), coords, meta, latent)


def reencoding_mse(encoder: nn.Module, decoded: Fields, coords: torch.Tensor, meta: Mapping,
                   latent: torch.Tensor) -> torch.Tensor:
    """``MSE(encoder(decoded, coords, meta), latent.detach())``: the unweighted L_inv_dec; scalar."""
    # Decoded fields are model outputs: NaN there is a diverged model, left to the training step's
    # nan_policy, not bad input data for the encoder's input check.
    with allow_nonfinite("fields"):
        reencoded = encoder(decoded, coords, meta)
    target = latent.detach()
    check_same_shape("inverse_decoding_loss (re-encoded vs latent)", reencoded, target)
    return torch.mean((reencoded - target) ** 2)
