"""Anchored decoding: the input frame's reconstruction error carried into the predictions at its points.

A prediction decoded at the points of the input frame u_0 inherits the autoencoder's error there, and
part of that error is the same in every frame near u_0: the input's own reconstruction error
e_0 = u_0 - D(E(u_0)) (what the latent tokens miss, mostly fine scales) reappears, advected and damped,
in the frames that follow. The anchored prediction k steps ahead is

    u_k ~ D(z_k) + w_k * e_0        at the input's points,

with one weight per step, w_k in [0, 1], fitted after training on the validation windows by least squares
of the squared nRMSE (:func:`calibrate_anchor`): the fraction of e_0 that is still there k steps later.
Points other than the input's (super-resolution, arbitrary queries) get no correction, since e_0 is known
only where u_0 is; nor do physical-mode rollouts, which re-encode their own predictions. Weights of 0 (no
calibration) leave every prediction as it was.

The correction passes the input field around the latent (the decoder no longer sees only latent tokens),
so the pipeline applies it only when asked (``stage2.anchor=true``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device


class AnchorFit:
    """Accumulates, per step k, what the least-squares weight w_k and the nRMSE with and without it need.

    Per sample and channel it keeps |r|^2, <r, e_0>, |e_0|^2 and |u_k|^2 (r = D(z_k) - u_k, masked points
    left out), so the nRMSE of any weight is exact, not a bound.
    """

    def __init__(self) -> None:
        self.terms: dict[int, list[torch.Tensor]] = {}
        self.windows: dict[int, int] = {}

    def update(self, step: int, error: torch.Tensor, input_error: torch.Tensor, target: torch.Tensor,
               mask: torch.Tensor | None = None) -> None:
        """step: 1-based; error = prediction - target, input_error = e_0, target: raw (B, N, C); mask (B, N)."""
        if mask is not None:
            keep = mask[..., None].to(error.dtype)
            error, input_error, target = error * keep, input_error * keep, target * keep
        error, input_error, target = error.double(), input_error.double(), target.double()
        terms = torch.stack([error.pow(2).sum(1), (error * input_error).sum(1), input_error.pow(2).sum(1),
                             target.pow(2).sum(1)], dim=-1)  # (B, C, 4)
        self.terms.setdefault(step, []).append(terms.flatten(0, 1).cpu())
        self.windows[step] = self.windows.get(step, 0) + error.shape[0]

    def steps(self) -> int:
        return max(self.terms, default=0)

    def _stacked(self, step: int) -> torch.Tensor:
        terms = torch.cat(self.terms[step])
        return terms[terms[:, 3] > 0]  # an all-zero target has no nRMSE (the metrics skip it too)

    def weight(self, step: int) -> float:
        """argmin_w of sum over samples and channels of |r + w e_0|^2 / |u_k|^2, clipped to [0, 1]."""
        if step not in self.terms:
            return 0.0
        rr, re, ee, uu = self._stacked(step).unbind(-1)
        den = float((ee / uu).sum())
        if den <= 0:
            return 0.0
        return min(max(-float((re / uu).sum()) / den, 0.0), 1.0)

    def weights(self) -> list[float]:
        """w_1 .. w_K for K = the furthest step seen; a step never seen gets 0."""
        return [self.weight(k) for k in range(1, self.steps() + 1)]

    def nrmse(self, step: int, weight: float) -> float:
        """Mean over samples and channels of |r + w e_0| / |u_k| at ``step``."""
        rr, re, ee, uu = self._stacked(step).unbind(-1)
        return float(((rr + 2 * weight * re + weight**2 * ee).clamp_min(0) / uu).sqrt().mean())


def anchored(decoded: torch.Tensor, weights: Sequence[float], step: int, input_error: torch.Tensor | None) -> torch.Tensor:
    """``decoded`` (B, Q, C) at step ``step`` (1-based) plus w_step * ``input_error``, when both are there."""
    if input_error is None or step > len(weights) or weights[step - 1] == 0.0:
        return decoded
    return decoded + weights[step - 1] * input_error


@torch.no_grad()
def calibrate_anchor(model, loaders: Iterable) -> dict:
    """Fit ``model.anchor_weights`` on the windows of ``loaders`` (a stage's val loaders: one-step and rollout).

    Every window contributes to each step it has a target for; the one-step loader's windows start at every
    frame, the rollout loader's at the first. Predictions are the plain latent rollout (the weights in
    place are not used), so calibrating twice gives the same weights. Sets the weights on ``model`` and
    returns ``{"weights": [...], "windows": {k: n}, "nrmse_h1": (before, after)}``.
    """
    from upt_lightning.modules.evaluation import without_padding

    if getattr(model, "dataset_specs", None) is not None:
        raise ValueError("anchored decoding fits one set of weights for one dataset; this model serves "
                         f"{len(model.dataset_specs)} datasets: calibrate a single-dataset model")
    was_training = model.training
    model.eval()
    fit = AnchorFit()
    device = model.device
    for loader in loaders:
        for batch in loader:
            batch = without_padding(batch)
            if batch is None:
                continue
            b = model.prepare_batch(move_data_to_device(batch, device))
            denormalize = model.normalizer.denormalize_fields
            latent = model.encode(b.fields, b.coords, b.meta)
            input_error = b.raw_fields - denormalize(model.decode(latent, b.coords))
            for k in range(1, b.targets.shape[1] + 1):
                latent = model.step(latent, b.dt)
                error = denormalize(model.decode(latent, b.coords)) - b.raw_targets[:, k - 1]
                fit.update(k, error, input_error, b.raw_targets[:, k - 1], b.mask)
    model.train(was_training)
    weights = fit.weights()
    model.anchor_weights = weights
    report = {"weights": weights, "windows": dict(fit.windows)}
    if weights:
        report["nrmse_h1"] = (fit.nrmse(1, 0.0), fit.nrmse(1, weights[0]))
    return report
