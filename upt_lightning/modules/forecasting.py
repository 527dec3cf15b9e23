"""Validation and test of any next-step model: the metrics UPT and its baselines are compared on.

One class serves the latent operator and the FNO baseline, so the two report the same metric names
(``val/nrmse``, ``test/rollout_nrmse_h{k}``, ``test/persistence_...``) computed the same way, and the
pipeline's test, super-resolution, plots, summary and sweep table read either without a branch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from upt_lightning.fields import channel_names as channel_names_of
from upt_lightning.metrics.conservation import resolve_quantities
from upt_lightning.models.multi_dataset import batch_dataset
from upt_lightning.modules.dataset_logs import per_dataset_logs
from upt_lightning.modules.evaluation import (
    OneStepEvaluation,
    RolloutEvaluation,
    starts_reported_apart,
    without_padding,
)


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
        against the channels here (ValueError naming the problem) and kept resolved in ``self.conserved``.

        A multi-dataset model (``dataset_names`` not empty) gets one set of metrics per dataset, built for its
        channels and grid; ``conservation`` is then ``{dataset: declaration}`` and ``channel_names`` unused.
        """
        names = list(getattr(self, "dataset_names", []) or [])
        if not names:
            self._init_forecast_state(list(channel_names), conservation)
            return
        unknown = set(conservation or {}) - set(names)
        if unknown:
            raise ValueError(f"conservation names datasets {sorted(unknown)} that are not among {names}")
        self._forecast_states = {}
        self.forecast_metrics = torch.nn.ModuleDict()
        for name in names:
            self.activate_dataset(name)
            self._init_forecast_state(channel_names_of(self.field_spec), (conservation or {}).get(name))
            self.forecast_metrics[name] = torch.nn.ModuleDict(
                {"val_onestep": self.val_onestep, "test_onestep": self.test_onestep}
            )
            self._forecast_states[name] = self._forecast_state()
        self.activate_dataset(names[0])

    def _init_forecast_state(self, channel_names: Sequence[str], conservation: Mapping | None) -> None:
        # The rollout metrics are built on first use: their horizon is that of the rollout loader.
        self._rollout_names = list(channel_names)
        self.conserved = resolve_quantities(conservation, self._rollout_names)
        self.val_onestep = OneStepEvaluation(self.num_channels, self.grid_shape, self._rollout_names)
        self.test_onestep = OneStepEvaluation(self.num_channels, self.grid_shape, self._rollout_names)
        self.val_rollout: RolloutEvaluation | None = None
        self.test_rollout: RolloutEvaluation | None = None

    _FORECAST_STATE = ("_rollout_names", "conserved", "val_onestep", "test_onestep", "val_rollout", "test_rollout")

    def _forecast_state(self) -> dict:
        return {key: getattr(self, key) for key in self._FORECAST_STATE}

    def on_dataset_activated(self, previous: str, name: str) -> None:
        """Keep the metrics (and the lazily built rollout metrics) of ``previous``; bring ``name``'s in."""
        states = getattr(self, "_forecast_states", None)
        if states is None or name not in states:
            return
        if previous in states:
            states[previous] = self._forecast_state()
        for key, value in states[name].items():
            setattr(self, key, value)

    def predict_next_normalised(self, b) -> torch.Tensor:
        """The next frame of a prepared batch: normalised (B, N, C) at the batch's points."""
        raise NotImplementedError

    def rollout_batch_normalised(self, b, steps: int) -> torch.Tensor:
        """``steps`` autoregressive frames of a prepared batch: normalised (B, steps, N, C)."""
        raise NotImplementedError

    def _rollout_eval(self, stage: str, horizon: int) -> RolloutEvaluation:
        attr = f"{stage}_rollout"
        current = getattr(self, attr)
        # The rollout windows' start frames (data.rollout_starts), reported apart when there are several.
        starts = getattr(getattr(self._trainer, "datamodule", None), "rollout_starts", None)
        if current is None or current.horizon != horizon or current.starts != starts_reported_apart(starts):
            current = RolloutEvaluation(horizon, self.num_channels, self.grid_shape, self._rollout_names,
                                        self.conserved, starts)
            setattr(self, attr, current.to(self.device))
        return current

    def _evaluate(self, batch, dataloader_idx: int, stage: str) -> None:
        if getattr(self, "dataset_names", None):
            # Loaders come in pairs per dataset: (one-step, rollout) of the first dataset, then the next's.
            self.activate_dataset(batch_dataset(batch, self.dataset_names))
            dataloader_idx %= 2
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
            rollout_eval.update(self.normalizer.denormalize_fields(pred), b.raw_targets, b.raw_fields, b.mask,
                                t0=batch.get("t0"))

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._evaluate(batch, dataloader_idx, "val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._evaluate(batch, dataloader_idx, "test")

    def _epoch_end(self, stage: str) -> None:
        names = getattr(self, "dataset_names", None)
        if not names:
            self.log_dict(self._stage_logs(stage))
            return

        def compute(name: str) -> dict[str, torch.Tensor]:
            self.activate_dataset(name)
            return self._stage_logs(stage)

        self.log_dict(per_dataset_logs(stage, names, compute))

    def _stage_logs(self, stage: str) -> dict[str, torch.Tensor]:
        logs = getattr(self, f"{stage}_onestep").compute_and_reset(stage)
        rollout = getattr(self, f"{stage}_rollout")
        if rollout is not None:
            logs.update(rollout.compute_and_reset(stage))
        return logs

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")
