"""Validation and test of any next-step model: the metrics UPT and its baselines are compared on.

One class serves the latent operator and the FNO baseline, so the two report the same metric names
(``val/nrmse``, ``test/rollout_nrmse_h{k}``, ``test/persistence_...``) computed the same way, and the
pipeline's test, super-resolution, plots, summary and sweep table read either without a branch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from upt_lightning.metrics.conservation import resolve_quantities
from upt_lightning.modules.evaluation import OneStepEvaluation, RolloutEvaluation, without_padding


class ForecastEvaluationMixin:
    """Loader 0 of val/test: one-step metrics; loader 1: rollout metrics per horizon step; both in physical
    units beside persistence (prediction = input frame).

    The LightningModule that mixes it in (before ``LightningModule`` in its bases) calls
    :meth:`init_forecast_evaluation` in ``__init__`` and provides ``normalizer``, ``num_channels``,
    ``grid_shape``, ``device``, ``prepare_batch(batch)`` (a ``PreparedBatch`` of normalised and raw tensors)
    and the two predictions :meth:`predict_next_normalised` and :meth:`rollout_batch_normalised`.
    """

    def init_forecast_evaluation(self, channel_names: Sequence[str], conservation: Mapping | None = None) -> None:
        """``conservation``: the data set's declared quantities (metrics/conservation.py), or None; checked
        against the channels here (ValueError naming the problem) and kept resolved in ``self.conserved``."""
        # The rollout metrics are built on first use: their horizon is that of the rollout loader.
        self._rollout_names = list(channel_names)
        self.conserved = resolve_quantities(conservation, self._rollout_names)
        self.val_onestep = OneStepEvaluation(self.num_channels, self.grid_shape, self._rollout_names)
        self.test_onestep = OneStepEvaluation(self.num_channels, self.grid_shape, self._rollout_names)
        self.val_rollout: RolloutEvaluation | None = None
        self.test_rollout: RolloutEvaluation | None = None

    def predict_next_normalised(self, b) -> torch.Tensor:
        """The next frame of a prepared batch: normalised (B, N, C) at the batch's points."""
        raise NotImplementedError

    def rollout_batch_normalised(self, b, steps: int) -> torch.Tensor:
        """``steps`` autoregressive frames of a prepared batch: normalised (B, steps, N, C)."""
        raise NotImplementedError

    def _rollout_eval(self, stage: str, horizon: int) -> RolloutEvaluation:
        attr = f"{stage}_rollout"
        current = getattr(self, attr)
        if current is None or current.horizon != horizon:
            current = RolloutEvaluation(horizon, self.num_channels, self.grid_shape, self._rollout_names,
                                        self.conserved)
            setattr(self, attr, current.to(self.device))
        return current

    def _evaluate(self, batch, dataloader_idx: int, stage: str) -> None:
        if dataloader_idx != 0:  # built on every rank, even one whose shard is all padding: compute() syncs
            rollout_eval = self._rollout_eval(stage, batch["targets"].shape[1])
        batch = without_padding(batch)
        if batch is None:
            return
        b = self.prepare_batch(batch)
        if dataloader_idx == 0:
            pred = self.normalizer.denormalize_fields(self.predict_next_normalised(b))
            getattr(self, f"{stage}_onestep").update(pred, b.raw_targets[:, 0], b.raw_fields, b.mask)
        else:
            pred = self.rollout_batch_normalised(b, b.targets.shape[1])
            rollout_eval.update(self.normalizer.denormalize_fields(pred), b.raw_targets, b.raw_fields, b.mask)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._evaluate(batch, dataloader_idx, "val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._evaluate(batch, dataloader_idx, "test")

    def _epoch_end(self, stage: str) -> None:
        logs = getattr(self, f"{stage}_onestep").compute_and_reset(stage)
        rollout = getattr(self, f"{stage}_rollout")
        if rollout is not None:
            logs.update(rollout.compute_and_reset(stage))
        self.log_dict(logs)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")
