"""What the neuraloperator baselines share (FNO on grids, GINO on any points): a next-step model of normalised
fields trained with the MSE of the next frame, the training split's normalisation taken at ``setup``, the
optimiser and NaN policy of UPT's stages, checkpoints loadable with ``weights_only``, and UPT's evaluation
(:class:`~upt_lightning.modules.surrogate.SurrogateModule`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from upt_lightning.fields import channel_names, total_channels, validate_field_spec
from upt_lightning.losses import masked_mse
from upt_lightning.models.normalizer import FieldNormalizer
from upt_lightning.modules.nonfinite import check_nan_policy
from upt_lightning.modules.optim import OptimSettings
from upt_lightning.modules.surrogate import SurrogateModule
from upt_lightning.settings import settings_of


def check_positive_ints(**values: Any) -> None:
    """ValueError naming the first value that is not a positive integer."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")


class NeuralopBaseline(SurrogateModule):
    """The base of :class:`~upt_lightning.baselines.FNOModule` and :class:`~upt_lightning.baselines.GINOModule`.

    A subclass calls :meth:`init_baseline` in ``__init__`` (before building its network), then
    ``save_init_arguments`` and ``init_forecast_evaluation``; it provides ``prepare_batch``,
    ``predict_next_normalised``, ``rollout_batch_normalised`` and :meth:`data_identity`."""

    label = "baseline"

    def init_baseline(self, field_channels: Mapping[str, int], coord_dim: int,
                      optim: OptimSettings | Mapping[str, Any] | None, nan_policy: str) -> OptimSettings:
        """Field spec, normaliser, optimiser settings (returned) and NaN policy."""
        self.optim_settings = settings_of(OptimSettings, optim, "optim")
        self.nan_policy = check_nan_policy(nan_policy)
        self.field_spec = validate_field_spec(field_channels)
        self.num_channels = total_channels(self.field_spec)
        self.normalizer = FieldNormalizer(self.num_channels, int(coord_dim))
        return self.optim_settings

    def channel_names(self) -> list[str]:
        return channel_names(self.field_spec)

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        # neuralop's BaseModel files its constructor arguments (functions, classes) under "_metadata"; those
        # cannot be read with weights_only=True, and this module's hyperparameters rebuild the network anyway.
        state.pop("_metadata", None)
        return state

    # ----------------------------------------------------------------- setup
    def data_identity(self, data) -> tuple[dict, dict]:
        """(what the DataModule ``data`` gives, what this model was built for): compared at ``setup``."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        super().setup(stage)  # the process group's exit, the NaN policy against the world size
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None:
            return
        found, built = self.data_identity(data)
        if found != built:
            raise ValueError(f"the data ({found}) differ from what this {self.label} was built for ({built}): "
                             "build it for this data")
        if not bool(self.normalizer.initialised):
            self.normalizer.set_stats(data.stats, dt=data.dt)

    def check_frame_dt(self, dt: torch.Tensor | float | None) -> None:
        """The baselines have no time input: one step is one training frame, so ``dt`` must be None or that."""
        norm = self.normalizer
        if dt is not None and not torch.allclose(norm.normalize_dt(dt), torch.ones((), device=norm.dt_ref.device),
                                                 rtol=1e-3):
            raise ValueError(f"the {self.label} baseline steps one training frame ({float(norm.dt_ref):g}) and has "
                             f"no time input; got dt={dt}: pass dt=None or the data's frame spacing")

    # --------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        b = self.prepare_batch(batch)
        loss = masked_mse(self.predict_next_normalised(b), b.targets[:, 0], b.mask)
        if not self.loss_is_usable(loss, {"L_next": loss}, batch, batch_idx):
            return None  # nan_policy=skip: Lightning runs no backward and no update for this batch
        size = b.fields.shape[0]
        self.log("train/loss", loss, batch_size=size)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=size)
        return loss
