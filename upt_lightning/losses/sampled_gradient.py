"""A full decode whose backward runs at sampled points only: the cheap L_inv_dec on grids.

A GridEncoder reads every grid point, so ``inverse_decoding_loss`` must decode the whole grid to
re-encode it, and the decoder's backward over ``N`` points dominated the operator step
(docs/performance.md, ``queries``). Its value needs every point; its gradient does not:

    full     = decoder(all N points)        under no_grad (no activations kept)
    sampled  = decoder(Q sampled points)    with gradients
    decoded  = full + scatter(s * (sampled - sampled.detach())),   s = N / Q

``decoded`` equals ``full`` exactly (the added term is zero), so the loss value is unchanged.
Backward reaches the decoder only through the sampled rows, scaled by ``s``: with every point kept
with probability ``Q / N`` (uniform and stratified sampling both guarantee this), the expected
gradient is the full one, i.e. the estimate is unbiased. With a padding ``mask`` only real points
are drawn and ``s`` is the real-point count of each sample over ``Q``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from upt_lightning.fields import cat_fields
from upt_lightning.query_sampling import apply_query_sampling


@dataclass
class PointSample:
    """``index`` ``(B, Q)`` long: the kept points of each sample; ``scale`` ``(B, 1, 1)`` float32:
    points a sample could have been drawn from (its real points) over ``Q``."""

    index: torch.Tensor
    scale: torch.Tensor


def draw_point_sample(
    coords: torch.Tensor,
    num_queries: int,
    strategy: str = "uniform",
    grid_shape: Sequence[int] | None = None,
    *,
    generator: torch.Generator | None = None,
    per_sample: bool = False,
    mask: torch.Tensor | None = None,
) -> PointSample | None:
    """The points ``apply_query_sampling`` keeps of ``coords`` ``(B, N, d)``, as indices.

    The same rules and the same draws from ``generator`` as ``apply_query_sampling`` with these
    arguments (it samples the point indices as a field). Returns None when it keeps every point
    (``num_queries`` not below the point count); nothing is drawn then.
    """
    batch, total = coords.shape[:2]
    ids = torch.arange(total, device=coords.device).expand(batch, total)[..., None]
    sampled = apply_query_sampling(ids, coords, num_queries, strategy, grid_shape,
                                   generator=generator, per_sample=per_sample, mask=mask)
    index = sampled[0][..., 0]
    if index.shape[1] == total:
        return None
    real = mask.sum(dim=1) if mask is not None else torch.full((batch,), total, device=coords.device)
    return PointSample(index=index, scale=(real.float() / index.shape[1]).view(batch, 1, 1))


def take_points(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` ``(B, Q)`` of ``values`` ``(B, N, C)`` -> ``(B, Q, C)``."""
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))


def splice_sampled_gradient(full: torch.Tensor, sampled: torch.Tensor, sample: PointSample) -> torch.Tensor:
    """``full`` ``(B, N, C)`` in value; backward goes to ``sampled`` ``(B, Q, C)`` (the same fields at
    ``sample.index``) times ``sample.scale``. ``full`` carries no gradient."""
    delta = sample.scale.to(sampled.dtype) * (sampled - sampled.detach())
    return full.detach().scatter_add(1, sample.index[..., None].expand_as(sampled), delta)


def decode_sampled(decoder: nn.Module, positions: torch.Tensor, latent: torch.Tensor,
                   sample: PointSample) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``latent`` ``(B, T, D)`` at all ``positions`` ``(B, N, d)`` with the gradient of ``sample``.

    Returns ``(decoded (B, N, C), sampled (B, Q, C))``: the spliced full decode (value of a plain
    decode, unbiased gradient) and the sampled rows with their plain gradient, channels in the order
    of ``decoder.field_channels``.
    """
    spec = decoder.field_channels
    with torch.no_grad():
        full = cat_fields(decoder(positions, latent), spec)
    sampled = cat_fields(decoder(take_points(positions, sample.index), latent), spec)
    return splice_sampled_gradient(full, sampled, sample), sampled
