"""Mean squared errors in latent space and the masked MSE used by the inverse losses."""

from __future__ import annotations

import torch

from upt_lightning.losses.checks import check_same_shape


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``(pred - target)**2`` over ``(B, N, C)``; with ``mask`` ``(B, N)`` (True = real
    point) the mean runs over the real points only, so padding adds nothing."""
    check_same_shape("masked_mse", pred, target)
    if mask is None:
        return torch.mean((pred - target) ** 2)
    if mask.shape != pred.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be a bool tensor of shape {tuple(pred.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
        )
    squared = torch.where(mask[..., None], (pred - target) ** 2, torch.zeros((), dtype=pred.dtype, device=pred.device))
    return squared.sum() / (mask.sum() * pred.shape[-1]).clamp_min(1)


def forward_loss(pred_next: torch.Tensor, target_next: torch.Tensor) -> torch.Tensor:
    """One-step latent MSE between ``pred_next`` and ``target_next`` ``(B, T, D)``; scalar."""
    check_same_shape("forward_loss", pred_next, target_next)
    return torch.mean((pred_next - target_next) ** 2)


def rollout_loss(pred_rollout: torch.Tensor, target_rollout: torch.Tensor) -> torch.Tensor:
    """Latent MSE over rollout stacks ``(B, K, T, D)`` (``K`` steps), averaged over every step; scalar."""
    check_same_shape("rollout_loss", pred_rollout, target_rollout)
    if pred_rollout.ndim != 4:
        raise ValueError(
            f"rollout_loss expects stacks (B, K, T, D) of K latent steps, got shape {tuple(pred_rollout.shape)}"
        )
    return torch.mean((pred_rollout - target_rollout) ** 2)
