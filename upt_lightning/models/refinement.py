"""Latent refinement: the encoder's tokens improved by a few gradient steps on the frozen decoder's reconstruction.

The encoder is amortised: one forward pass maps fields to latent tokens, and with the decoder frozen,
optimised tokens reconstruct the same fields markedly better (docs/accuracy.md, seventh round). Refinement
takes ``steps`` Adam steps on the tokens, each on the squared reconstruction error at ``points`` random
points of the input. This turns the encoder into a semi-amortised one, as auto-decoding surrogates encode.

Adam moves every coordinate by about its rate whatever the gradient's size, but a well reconstructed sample
needs a smaller correction than a poor one: with one fixed rate the smooth, late frames of a decaying flow
were overshot (their reconstruction got worse) while the rough first frames wanted more. With
``rate: residual`` each sample's rate is ``lr`` times its RMS residual at the first step
(normalised units), so the correction scales with the error it corrects; ``rate: fixed`` (the default of
``latent_refinement``, and the rule of settings stored before the key existed) uses ``lr`` as it is. On the
default experiment's autoencoder five steps took the test reconstruction nRMSE from 0.00401 to 0.00302 with
the residual rate, and to 0.00319 at best with a fixed one (docs/accuracy.md, eighth round).

The model stays a UPT: fields -> encoder (+ refinement) -> latent tokens -> operator -> decoder; the
refinement only reads the input, and what reaches the decoder is latent tokens alone.

**Inference refinement with a carried correction** (``stage2.inference_refinement``): training stays on the
encoder's own latents, and only the frame a prediction starts from is refined, by more and smaller steps. The
correction c = z* - z of its latent is carried in latent space: the k-th prediction decodes
F^k(z) + carry^k * c, where F is the operator. The input's reconstruction error persists, damped, into
the next frames, and so does the part of it the correction captures; the operator, trained on the encoder's
latents, steps from z as it was trained to. Only latent tokens reach the decoder. On the default
experiment: one step 0.00418 -> 0.00327, later horizons unchanged (docs/accuracy.md, eighth round).

The point draws come from a generator seeded per call, so the same batch always gives the same latents
and evaluation is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# Each rate rule with its default lr: for "residual" a multiple of the sample's RMS residual (normalised units).
RATES = {"residual": 0.25, "fixed": 2e-3}
# Inference refinement takes more, smaller steps (docs/accuracy.md, eighth round).
INFERENCE_RATES = {"residual": 0.15, "fixed": 1e-3}


def _checked(settings: Mapping, name: str, defaults: Mapping, default_rate: str, lrs: Mapping = RATES) -> dict:
    """``settings`` with ``defaults`` filled in and every value checked; ValueError names ``name.key``."""
    keys = ["steps", "lr", "points", "rate", *(key for key in defaults if key not in ("steps", "points"))]
    if not isinstance(settings, Mapping):
        raise ValueError(f"{name} must be null or a mapping {{{', '.join(keys)}}}, got {settings!r}")
    unknown = set(settings) - set(keys)
    if unknown:
        raise ValueError(f"{name} has unknown keys {sorted(unknown)}; it takes {', '.join(keys)}")
    rate = settings.get("rate", default_rate)
    if rate not in RATES:
        raise ValueError(f"{name}.rate must be one of {list(RATES)}, got {rate!r}")
    out = {**defaults, **settings, "rate": rate}
    out["lr"] = settings.get("lr", lrs[rate])
    for key in ("steps", "points"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise ValueError(f"{name}.{key} must be an integer >= 1, got {out[key]!r}")
    for key in ("lr", "carry"):
        if key not in out:
            continue
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"{name}.{key} must be a finite number > 0, got {value!r}")
        out[key] = float(value)
    if out.get("carry", 0.0) > 1:
        raise ValueError(f"{name}.carry must be in (0, 1] (the share of the correction kept per step), "
                         f"got {out['carry']!r}")
    return {key: out[key] for key in ("steps", "lr", "points", "rate", "carry") if key in out}


def check_refinement(settings: Mapping | None, freeze_autoencoder: bool = True) -> dict | None:
    """``{"steps": int >= 1, "lr": float > 0, "points": int >= 1, "rate": "residual" | "fixed"}`` (defaults
    filled in) or None; raises ValueError naming the key, or when the encoder and decoder are not frozen (the
    refinement reads a fixed decoder, and a latent cache of refined latents would go stale)."""
    if settings is None:
        return None
    if not freeze_autoencoder:
        raise ValueError("stage2.latent_refinement refines latents against the frozen decoder: it needs "
                         "freeze_autoencoder=true (or set stage2.latent_refinement=null)")
    # Without a rate, the rule the option had before the key existed: settings stored in older checkpoints
    # keep their meaning.
    return _checked(settings, "stage2.latent_refinement", {"steps": 5, "points": 128}, default_rate="fixed")


def check_inference_refinement(settings: Mapping | None) -> dict | None:
    """``{"steps", "lr", "points", "rate", "carry": float in (0, 1]}`` (defaults filled in) or None; raises
    ValueError naming the key."""
    if settings is None:
        return None
    return _checked(settings, "stage2.inference_refinement", {"steps": 20, "points": 128, "carry": 0.7},
                    default_rate="residual", lrs=INFERENCE_RATES)


def refine_latents(decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], latent: torch.Tensor,
                   fields: torch.Tensor, coords: torch.Tensor, steps: int, lr: float, points: int,
                   rate: str = "fixed", mask: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """Latent (B, T, D) after ``steps`` Adam steps on sum |decode(latent, x) - fields(x)|^2 at ``points`` random x.

    Args:
        decode: (latent (B, T, D), points (B, Q, d)) -> fields (B, Q, C), normalised; its weights get no
            gradient (``torch.autograd.grad`` is taken with respect to the latent only).
        fields: normalised (B, N, C) at ``coords`` (B, N, d); mask (B, N) True where a point is real (padded
            meshes): padded points are drawn but weigh nothing.
    Works under ``torch.no_grad`` and ``torch.inference_mode`` (evaluation): gradients are enabled inside.
    Each sample's tokens get their own Adam statistics (the loss is a sum over samples); every step draws
    one set of points from a generator seeded per call and uses it for every sample, so a sample's refined
    latent does not depend on the batch it is in (on grids; a padded mesh batch draws among its padded size).
    ``rate="residual"``: sample b's rate is ``lr`` times its RMS residual at the first step's points;
    ``"fixed"``: ``lr``.
    """
    if rate not in RATES:
        raise ValueError(f"rate must be one of {list(RATES)}, got {rate!r}")
    generator = torch.Generator(device=latent.device).manual_seed(seed)
    beta1, beta2 = ADAM_BETAS
    with torch.inference_mode(False), torch.enable_grad():
        # Tensors made under inference mode cannot take part in autograd; clones made outside it can.
        z, fields, coords = latent.detach().clone(), fields.detach().clone(), coords.detach().clone()
        weight = None if mask is None else mask.detach().clone().to(fields.dtype)
        first, second = torch.zeros_like(z), torch.zeros_like(z)
        batch, count = fields.shape[:2]
        step_size = torch.full((batch, 1, 1), lr, dtype=z.dtype, device=z.device)
        for step in range(1, steps + 1):
            # One draw of points per step, shared by the samples: a sample's result then does not depend on
            # which others share its batch (DDP ranks split batches differently from one process).
            index = torch.randint(count, (points,), generator=generator, device=fields.device).expand(batch, -1)
            at = torch.gather(coords, 1, index[..., None].expand(-1, -1, coords.shape[-1]))
            target = torch.gather(fields, 1, index[..., None].expand(-1, -1, fields.shape[-1]))
            z = z.detach().requires_grad_(True)
            error = (decode(z, at) - target).pow(2)
            point_weight = None if weight is None else torch.gather(weight, 1, index)
            if point_weight is not None:
                error = error * point_weight[..., None]
            if rate == "residual" and step == 1:
                # RMS over the sample's real drawn values; a sample with no real point drawn keeps rate 0.
                drawn = float(points) if point_weight is None else point_weight.sum(1).clamp_min(1)
                residual = (error.detach().sum((1, 2)) / (drawn * error.shape[-1])).sqrt()
                step_size = lr * residual[:, None, None]
            (grad,) = torch.autograd.grad(error.sum(), z)
            first = beta1 * first + (1 - beta1) * grad
            second = beta2 * second + (1 - beta2) * grad * grad
            update = (first / (1 - beta1**step)) / ((second / (1 - beta2**step)).sqrt() + ADAM_EPS)
            z = z.detach() - step_size * update
    return z.detach()
