"""The conservation loss: the drift of a data set's declared integrals in the decoded prediction."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from upt_lightning.metrics.conservation import domain_integrals, quantity_scale


def conservation_loss(pred: torch.Tensor, target: torch.Tensor, quantities: Mapping[str, tuple[str, list[int]]],
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over quantities and samples of ``((Q(pred) - Q(target)) / scale)^2``.

    ``pred``, ``target``: physical fields ``(B, N, C)`` at the same points (``mask`` ``(B, N)``, True = real
    point); ``quantities``: ``metrics.conservation.resolve_quantities`` of the data set's declaration. The
    scale is that of the conservation diagnostics (the true integral for energy and enstrophy, the true
    channel's RMS for a mean) and carries no gradient; the gradient flows into ``pred``, e.g. through a frozen
    decoder into the latent operator. Returned in ``pred``'s dtype.
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred and target must be (B, N, C) fields of one shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if not quantities:
        raise ValueError("conservation_loss needs at least one declared quantity (data.conservation)")
    predicted = domain_integrals(pred, quantities, mask)
    true = domain_integrals(target.detach(), quantities, mask)
    terms = []
    for name, (kind, channels) in quantities.items():
        scale = quantity_scale(target.detach(), kind, channels, true[name], mask).clamp_min(1e-12)
        terms.append(((predicted[name] - true[name]) / scale).square().mean())
    return torch.stack(terms).mean().to(pred.dtype)
