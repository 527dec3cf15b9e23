"""Autoregressive prediction with the latent operator: steps in latent space (or through physical space),
decoded at any points, at the steps asked for.

A mixin of :class:`OperatorModule`, which provides ``encode``, ``decode``, ``step``, ``normalizer``,
``encoder_meta``, ``refine``, ``anchor_weights``, ``hparams.rollout_eval_mode`` and ``hparams.inference_refinement``.
Validation, test, the pipeline's plots and ``bench rollout`` all predict through
:meth:`LatentRolloutMixin.rollout` or the normalised core below it.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from upt_lightning.modules.anchor import anchored

ROLLOUT_MODES = ("latent", "physical")


def check_decode_steps(decode_steps: Sequence[int] | None, steps: int) -> list[int]:
    """The 1-based steps to decode, in the order asked for (all of ``1..steps`` when None).

    Duplicates, steps outside ``1..steps`` and an empty list raise ValueError: each would otherwise
    return fewer or other frames than asked for, and the caller would index the wrong step.
    """
    if decode_steps is None:
        return list(range(1, steps + 1))
    try:
        wanted = [operator.index(k) for k in decode_steps if not isinstance(k, bool)]
    except TypeError:
        raise ValueError(f"decode_steps={decode_steps!r} must be a sequence of integer steps") from None
    if len(wanted) != len(decode_steps):
        raise ValueError(f"decode_steps={decode_steps!r} must be a sequence of integer steps")
    if not wanted:
        raise ValueError("decode_steps is empty: name at least one step, or pass None to decode every step")
    repeated = sorted({k for k in wanted if wanted.count(k) > 1})
    if repeated:
        raise ValueError(f"decode_steps={wanted} names step(s) {repeated} more than once; name each step once "
                         "(the result keeps the order asked for)")
    outside = [k for k in wanted if not 1 <= k <= steps]
    if outside:
        raise ValueError(f"decode_steps={wanted} names step(s) {outside} outside 1..{steps}: steps are 1-based and "
                         f"at most steps={steps}; raise steps or drop those")
    return wanted


def carried(latent: torch.Tensor, correction: torch.Tensor | None, k: int, carry: float) -> torch.Tensor:
    """The latent decoded k steps ahead: ``latent + carry**k * correction`` (B, T, D); ``latent`` without one."""
    return latent if correction is None else latent + carry**k * correction


class LatentRolloutMixin:
    """Rollouts of an operator module; see the module docstring for what the host class provides."""

    # ------------------------------------------------------------- evaluation
    def predict_next_normalised(self, b) -> torch.Tensor:
        """Encode, one operator step, decode at the batch's points (with the carried correction of inference
        refinement and anchored, modules/refine.py and modules/anchor.py): normalised (B, N, C)."""
        latent, correction = self._start(b.fields, b.coords, b.meta)
        input_error = self._input_error(b.fields, b.coords, latent, correction)
        predicted = carried(self.step(latent, b.dt), correction, 1, self._carry())
        return anchored(self.decode(predicted, b.coords), self.anchor_weights, 1, input_error)

    def rollout_batch_normalised(self, b, steps: int) -> torch.Tensor:
        """``steps`` frames in ``rollout_eval_mode``, decoded at the batch's points: normalised (B, steps, N, C)."""
        return self._rollout_normalised(b.fields, b.coords, b.meta, b.dt, steps, b.coords,
                                        self.hparams.rollout_eval_mode)

    def _carry(self) -> float:
        settings = self.hparams.get("inference_refinement")
        return float(settings["carry"]) if settings else 0.0

    def _start(self, fields: torch.Tensor, coords: torch.Tensor, meta) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The latent a prediction steps from (B, T, D), and the correction (B, T, D) that inference refinement
        adds to it when decoding (None when ``hparams.inference_refinement`` is unset)."""
        latent = self.encode(fields, coords, meta)
        settings = self.hparams.get("inference_refinement")
        if not settings:
            return latent, None
        return latent, self.refine(latent, fields, coords, meta, settings) - latent

    def _input_error(self, fields: torch.Tensor, coords: torch.Tensor, latent: torch.Tensor,
                     correction: torch.Tensor | None) -> torch.Tensor | None:
        """The input's reconstruction error in normalised units (B, N, C), from its latent plus the correction
        when there is one, or None when no anchor weight is set."""
        if not any(self.anchor_weights):
            return None
        return fields - self.decode(carried(latent, correction, 0, 1.0), coords)

    # -------------------------------------------------------------- inference
    def _rollout_normalised(self, fields, coords, meta, dt, steps, query_points, mode, decode_steps=None):
        """Normalised fields (B, N, C) -> normalised predictions (B, S, Q, C), S in the order of ``decode_steps``.

        Steps past the last one asked for are not taken. In physical mode each step's prediction is
        decoded at ``coords`` once and re-encoded; a step asked for at those same points reuses that decode.
        Latent-mode predictions carry inference refinement's correction (modules/refine.py), and those at
        ``coords`` itself are anchored (modules/anchor.py).
        """
        wanted = check_decode_steps(decode_steps, steps)
        last = max(wanted)
        if mode == "latent":
            latent, correction = self._start(fields, coords, meta)
        else:  # re-encoded every step: nothing to carry
            latent, correction = self.encode(fields, coords, meta), None
        carry = self._carry()
        decoded: dict[int, torch.Tensor] = {}
        same_points = query_points is coords
        anchoring = same_points and mode == "latent"
        input_error = self._input_error(fields, coords, latent, correction) if anchoring else None
        for k in range(1, last + 1):
            latent = self.step(latent, dt)
            reencode = mode == "physical" and k < last
            on_grid = self.decode(latent, coords) if reencode else None
            if k in wanted:
                decoded[k] = (on_grid if same_points and on_grid is not None
                              else self.decode(carried(latent, correction, k, carry), query_points))
                decoded[k] = anchored(decoded[k], self.anchor_weights, k, input_error)
            if reencode:
                latent = self.encode(on_grid, coords, meta)
        return torch.stack([decoded[k] for k in wanted], dim=1)

    @torch.no_grad()
    def rollout(
        self,
        fields: torch.Tensor,
        coords: torch.Tensor,
        steps: int,
        dt: torch.Tensor | float | None = None,
        query_points: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        mode: str = "latent",
        decode_steps: Sequence[int] | None = None,
        dataset: str | None = None,
    ) -> torch.Tensor:
        """Autoregressive prediction in physical units.

        Args:
            fields: raw fields (B, N, C) at raw ``coords`` (B, N, d); mask (B, N) for padded meshes.
            steps: number of operator steps.
            dt: physical time step (float or (B,)); default one training frame.
            query_points: raw points (B, Q, d) to decode at (default ``coords``): any resolution.
            mode: "latent" encodes once and steps in latent space; "physical" decodes and re-encodes
                at ``coords`` after every step.
            decode_steps: distinct 1-based steps in ``1..steps`` to decode, in the order wanted (default
                all); others are never decoded in latent mode. Duplicates or steps out of range raise.
            dataset: which of a multi-dataset model's datasets the fields belong to (default: the active one).
        Returns:
            raw predictions (B, S, Q, C), S = len(decode_steps) or steps, in the order of ``decode_steps``.
        """
        if mode not in ROLLOUT_MODES:
            raise ValueError(f"mode={mode!r} is unknown; choose one of {ROLLOUT_MODES}")
        if dataset is not None:
            self.activate_dataset(dataset)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        norm = self.normalizer
        points = norm.normalize_coords(coords)
        queries = points if query_points is None else norm.normalize_coords(query_points)
        step_dt = norm.normalize_dt(norm.dt_ref if dt is None else dt).reshape(-1).expand(fields.shape[0])
        pred = self._rollout_normalised(
            norm.normalize_fields(fields), points, self.encoder_meta(mask), step_dt, steps, queries, mode,
            decode_steps,
        )
        return norm.denormalize_fields(pred)

    def forward(self, fields, coords, dt=None, query_points=None, mask=None) -> torch.Tensor:
        """Raw fields (B, N, C) -> raw next-step prediction (B, Q, C)."""
        return self.rollout(fields, coords, 1, dt=dt, query_points=query_points, mask=mask)[:, 0]
