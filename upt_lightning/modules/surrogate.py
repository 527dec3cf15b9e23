"""The base every surrogate module shares (UPT's two stages and the FNO baseline): the NaN guard of training
losses, the optimiser built from the module's ``optim_settings``, the class path in checkpoints (and the grouping
of an earlier version's hyperparameters on loading), and forecast evaluation.

Forecast evaluation (``validation_step``/``test_step``): loader 0 of val/test gives one-step metrics, loader 1
rollout metrics per horizon step, both in physical units beside persistence (prediction = input frame). One
implementation serves the latent operator and the FNO, so the two report the same metric names
(``val/nrmse``, ``test/rollout_nrmse_h{k}``, ``test/persistence_...``) computed the same way, and the pipeline's
test, super-resolution, plots, summary and sweep table read either without a branch. A forecasting module calls
:meth:`init_forecast_evaluation` in ``__init__`` and provides ``normalizer``, ``num_channels``, ``grid_shape``,
``prepare_batch(batch)`` (a ``PreparedBatch``) and the two predictions :meth:`predict_next_normalised` and
:meth:`rollout_batch_normalised`; the autoencoder overrides the evaluation steps with its reconstruction metrics.

The NaN guard (``loss_is_usable``) applies ``self.nan_policy`` to one training step (modules/nonfinite.py):
under ``skip`` it logs the running count ``train/skipped_steps`` (of this fit; a resumed run restarts from 0) on
every step and warns on the first skip.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from upt_lightning.errors import NonFiniteLossError, UPTWarning
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
from upt_lightning.modules.nonfinite import HINT, all_finite, check_policy_supported, describe_nonfinite, finite_flag
from upt_lightning.modules.optim import budget_clock
from upt_lightning.runtime.legacy_hparams import legacy_init_arguments
from upt_lightning.runtime.process_group import destroy_process_group_at_exit


class SurrogateModule(pl.LightningModule):
    """NaN guard, optimiser, checkpoint class path and forecast evaluation; see the module docstring."""

    # ------------------------------------------------------------- NaN guard
    nan_policy: str = "raise"
    skipped_steps: int = 0
    # A list while the SyncFreeChecks callback defers the check (nan_policy=raise only): the steps' detached
    # losses wait here, on the device, until flush_loss_checks reads them all with one host sync.
    deferred_losses: list | None = None

    def loss_is_usable(self, loss: torch.Tensor, components: Mapping[str, torch.Tensor], batch, batch_idx: int) -> bool:
        """True: go on with backward. False (skip): return None from training_step. Raises under ``raise``."""
        if self.deferred_losses is not None and self.nan_policy == "raise":
            self.deferred_losses.append((self.global_step, self.current_epoch, batch_idx, loss.detach(),
                                         {name: value.detach() for name, value in components.items()}))
            return True
        usable = all_finite(loss, components)
        if not usable:
            where = f"global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
            what = describe_nonfinite(loss, components, batch)
            if self.nan_policy == "raise":
                raise NonFiniteLossError(f"non-finite training loss at {where}: {what}. {HINT}")
            self.skipped_steps += 1
            if self.skipped_steps == 1:
                rank_zero_warn(
                    f"nan_policy=skip: skipped {where}: {what}; no optimizer update for it. Further skips are "
                    "only counted, in the logged metric train/skipped_steps",
                    category=UPTWarning,
                )
        if self.nan_policy == "skip":
            self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False, batch_size=1)
        return usable

    def flush_loss_checks(self) -> None:
        """Check the deferred losses with one host sync; NonFiniteLossError for the first non-finite one."""
        pending, self.deferred_losses = self.deferred_losses, ([] if self.deferred_losses is not None else None)
        if not pending:
            return
        flags = torch.stack([finite_flag(loss, comps) for _, _, _, loss, comps in pending]).tolist()
        for (step, epoch, batch_idx, loss, comps), finite in zip(pending, flags):
            if not finite:
                raise NonFiniteLossError(
                    f"non-finite training loss at global step {step} (epoch {epoch}, batch {batch_idx}): "
                    f"{describe_nonfinite(loss, comps, None)}; found by the check every few steps (SyncFreeChecks), "
                    f"the weights may have taken the updates since. {HINT}"
                )

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        destroy_process_group_at_exit()  # a gloo group alive at interpreter exit can abort the worker
        if stage == "fit" and self._trainer is not None:
            check_policy_supported(self.nan_policy, self.trainer.world_size)

    # ----------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the module's class beside its hyperparameters, as LightningCLI's ``_class_path``.

        ``upt validate/test --ckpt_path`` parse a checkpoint's hyperparameters as init arguments of the
        class it names; without a name (checkpoints of train.py) they were parsed against the config's
        class and refused. A checkpoint written by the CLI keeps its own entry. ``load_from_checkpoint``
        passes a module only the hyperparameters its ``__init__`` takes, so the extra key is ignored there.
        """
        hparams = checkpoint.get("hyper_parameters")
        if hparams is not None:
            hparams.setdefault("_class_path", f"{type(self).__module__}.{type(self).__qualname__}")

    def save_init_arguments(self) -> None:
        """``save_hyperparameters()`` of the calling ``__init__``, with each settings object (loss, sampling,
        optim) stored as the plain mapping of its arguments, so checkpoints load with ``weights_only``."""
        self.save_hyperparameters(frame=inspect.currentframe().f_back)
        for store in (self._hparams, self._hparams_initial):
            for key, value in store.items():
                if hasattr(value, "as_dict"):
                    store[key] = value.as_dict()

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only: bool | None = None, **kwargs):
        """Lightning's ``load_from_checkpoint``, always with ``weights_only=True`` (this library's checkpoints
        hold tensors and plain types only; a file that holds more is refused). A checkpoint of an earlier version,
        whose hyperparameters list the loss, sampling and optimiser settings one by one, has them grouped as the
        constructor takes them (runtime/legacy_hparams.py)."""
        if weights_only is False:
            raise ValueError("load_from_checkpoint reads checkpoints with weights_only=True only: this library "
                             "writes nothing else, and unpickling more could run code")
        if isinstance(checkpoint_path, (str, os.PathLike)):
            stored = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
            kwargs = {**legacy_init_arguments(stored.get("hyper_parameters") or {}), **kwargs}
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                            strict=strict, weights_only=True, **kwargs)

    # ------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        """``self.optim_settings`` (an :class:`~upt_lightning.modules.optim.OptimSettings`) over the trainable
        parameters; the weights acting on a conditioning vector (``conditioning_parameters``) stay off Muon."""
        return self.optim_settings.build(
            (p for p in self.parameters() if p.requires_grad), self.trainer.estimated_stepping_batches,
            clock=budget_clock(self.trainer),
            muon_exempt=[p for m in self.modules() if hasattr(m, "conditioning_parameters")
                         for p in m.conditioning_parameters()],
        )

    # --------------------------------------------------------- forecast evaluation
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
