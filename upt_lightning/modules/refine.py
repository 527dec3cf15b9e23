"""Latent refinement: the encoder's tokens improved by a few gradient steps on the frozen decoder's reconstruction.

The encoder is amortised: one forward pass maps fields to latent tokens, and with the decoder frozen,
optimised tokens reconstruct the same fields markedly better (docs/accuracy.md, seventh round). Refinement
takes ``steps`` Adam steps on the tokens, each on the squared reconstruction error at ``points`` random
points of the input. This turns the encoder into a semi-amortised one, as auto-decoding surrogates encode.
The model stays a UPT: fields -> encoder (+ refinement) -> latent tokens -> operator -> decoder; the
refinement only reads the input, and what reaches the decoder is latent tokens alone.

The point draws come from a generator seeded per call, so the same batch always gives the same latents
and evaluation is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def check_refinement(settings: Mapping | None, freeze_autoencoder: bool = True) -> dict | None:
    """``{"steps": int >= 1, "lr": float > 0, "points": int >= 1}`` (defaults filled in) or None; raises
    ValueError naming the key, or when the encoder and decoder are not frozen (the refinement reads a fixed
    decoder, and a latent cache of refined latents would go stale)."""
    if settings is None:
        return None
    if not freeze_autoencoder:
        raise ValueError("stage2.latent_refinement refines latents against the frozen decoder: it needs "
                         "freeze_autoencoder=true (or set stage2.latent_refinement=null)")
    if not isinstance(settings, Mapping):
        raise ValueError(f"stage2.latent_refinement must be null or a mapping {{steps, lr, points}}, got {settings!r}")
    unknown = set(settings) - {"steps", "lr", "points"}
    if unknown:
        raise ValueError(f"stage2.latent_refinement has unknown keys {sorted(unknown)}; it takes steps, lr and points")
    out = {"steps": settings.get("steps", 5), "lr": settings.get("lr", 2e-3), "points": settings.get("points", 128)}
    for key in ("steps", "points"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise ValueError(f"stage2.latent_refinement.{key} must be an integer >= 1, got {out[key]!r}")
    if isinstance(out["lr"], bool) or not isinstance(out["lr"], (int, float)) or not out["lr"] > 0:
        raise ValueError(f"stage2.latent_refinement.lr must be a number > 0, got {out['lr']!r}")
    out["lr"] = float(out["lr"])
    return out


def refine_latents(decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], latent: torch.Tensor,
                   fields: torch.Tensor, coords: torch.Tensor, steps: int, lr: float, points: int,
                   mask: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """Latent (B, T, D) after ``steps`` Adam steps on sum |decode(latent, x) - fields(x)|^2 at ``points`` random x.

    Args:
        decode: (latent (B, T, D), points (B, Q, d)) -> fields (B, Q, C), normalised; its weights get no
            gradient (``torch.autograd.grad`` is taken with respect to the latent only).
        fields: normalised (B, N, C) at ``coords`` (B, N, d); mask (B, N) True where a point is real (padded
            meshes): padded points are drawn but weigh nothing.
    Works under ``torch.no_grad`` and ``torch.inference_mode`` (evaluation): gradients are enabled inside.
    Each sample's tokens get their own Adam statistics (the loss is a sum over samples); the point draws
    come from one generator per call, so they depend on the batch's size.
    """
    generator = torch.Generator(device=latent.device).manual_seed(seed)
    beta1, beta2 = ADAM_BETAS
    with torch.inference_mode(False), torch.enable_grad():
        # Tensors made under inference mode cannot take part in autograd; clones made outside it can.
        z, fields, coords = latent.detach().clone(), fields.detach().clone(), coords.detach().clone()
        weight = None if mask is None else mask.detach().clone().to(fields.dtype)
        first, second = torch.zeros_like(z), torch.zeros_like(z)
        batch, count = fields.shape[:2]
        for step in range(1, steps + 1):
            index = torch.randint(count, (batch, points), generator=generator, device=fields.device)
            at = torch.gather(coords, 1, index[..., None].expand(-1, -1, coords.shape[-1]))
            target = torch.gather(fields, 1, index[..., None].expand(-1, -1, fields.shape[-1]))
            z = z.detach().requires_grad_(True)
            error = (decode(z, at) - target).pow(2)
            if weight is not None:
                error = error * torch.gather(weight, 1, index)[..., None]
            (grad,) = torch.autograd.grad(error.sum(), z)
            first = beta1 * first + (1 - beta1) * grad
            second = beta2 * second + (1 - beta2) * grad * grad
            update = (first / (1 - beta1**step)) / ((second / (1 - beta2**step)).sqrt() + ADAM_EPS)
            z = z.detach() - lr * update
    return z.detach()
