"""Stage 2: a trainable latent operator between a frozen (or jointly trained) encoder and decoder."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from upt_lightning.errors import CheckpointError
from upt_lightning.fields import channel_names, split_fields
from upt_lightning.losses import OperatorLoss, inverse_encoding_loss
from upt_lightning.modules.base import UPTModuleBase
from upt_lightning.models.builders import build_operator
from upt_lightning.runtime.checkpoints import ARCH_KEYS, adopt_autoencoder_state, load_autoencoder_checkpoint
from upt_lightning.models.refinement import check_inference_refinement, check_refinement
from upt_lightning.models.upt import ROLLOUT_MODES, UPT
from upt_lightning.modules.optim import OptimSettings
from upt_lightning.query_sampling import QuerySampling
from upt_lightning.settings import settings_of

# Lightning warns about modules left in eval mode at fit start; the frozen stage-1 models are so on purpose.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


class OperatorModule(UPTModuleBase):
    """Latent time-stepping surrogate with UPT's inverse losses (stage 2).

    One training step: z_t = E(u_t) (frozen), z_pred = operator(z_t, dt), target z_next = E(u_next);
    loss = ``compute_operator_loss_bundle`` with forward (latent MSE), inverse encoding (decode z_pred at
    sampled queries vs u_next), inverse decoding (decode z_pred, re-encode, compare with z_pred), rollout
    (K latent steps vs encoded targets) and spectral (amplitude spectra of decoded z_pred vs u_next) terms.

    Args:
        autoencoder_ckpt: a stage-1 (:class:`AutoencoderModule`) checkpoint; its architecture, weights and
            normalisation statistics are taken over. Required when ``freeze_autoencoder`` is True.
        autoencoder: stage-1 architecture hyperparameters (field_channels, coord_dim, grid_shape, encoder,
            decoder, latent_tokens, latent_dim, datasets) when no checkpoint is given (end-to-end training from
            scratch), and ``source``: the stage-1 file the weights came from. Checkpoints of this module store
            them here, so ``load_from_checkpoint`` needs no stage-1 file.
        operator: kwargs of :class:`LatentOperator`.
        freeze_autoencoder: encoder/decoder frozen (requires_grad False, eval mode, not in the optimiser).
            False trains all three end to end (the UPT paper's way); then the encoded input is also
            reconstructed (``loss.lambda_recon``) and target latents are detached to prevent collapse.
        loss: an :class:`OperatorLoss` or a mapping of its arguments (the ``loss`` config group): the terms'
            weights, the inverse terms' batch frequency and their curriculum (read by the
            :class:`InverseLossCurriculum` callback when attached; without it the weights stay at base).
        sampling, optim, seed, nan_policy: as in :class:`UPTModuleBase`.
        rollout_eval_mode: "latent" (encode once) or "physical" (decode and re-encode every step) in val/test.
        conservation: the data set's conserved or dissipated quantities ``{name: {kind, fields}}``, whose drift
            from the truth val/test rollouts log per horizon (``test/conservation/<name>_h<k>``); None: none.
            For a multi-dataset model (stage 1 trained with ``datasets``): ``{dataset: {name: {kind, fields}}}``.
        latent_refinement ({steps, lr, points, rate} or None): every encode (training, latent cache, evaluation)
            refines the encoder's latent by that many Adam steps on the frozen decoder's reconstruction at that
            many random points (models/refinement.py); needs ``freeze_autoencoder``.
        inference_refinement ({steps, lr, points, rate, carry} or None): predictions (validation, test,
            ``rollout``) refine the latent of the frame they start from and decode the k-th step's latent plus
            carry^k times that correction (latent-mode rollouts; models/refinement.py). Training is unchanged.

    A stage-1 model over several datasets (``datasets`` in its architecture) makes a multi-dataset operator:
    the operator is conditioned on the batch's dataset, and val/test report every metric per dataset
    (``test/<dataset>/nrmse``) and the mean over datasets (``test/nrmse``).
    """

    def __init__(
        self,
        autoencoder_ckpt: str | None = None,
        autoencoder: Mapping[str, Any] | None = None,
        operator: Mapping[str, Any] | None = None,
        freeze_autoencoder: bool = True,
        loss: OperatorLoss | Mapping[str, Any] | None = None,
        sampling: QuerySampling | Mapping[str, Any] | None = None,
        optim: OptimSettings | Mapping[str, Any] | None = None,
        rollout_eval_mode: str = "latent",
        conservation: Mapping[str, Any] | None = None,
        latent_refinement: Mapping[str, Any] | None = None,
        inference_refinement: Mapping[str, Any] | None = None,
        seed: int = 0,
        nan_policy: Literal["raise", "skip"] = "raise",
    ):
        state = None
        if autoencoder_ckpt is not None:
            architecture, state = load_autoencoder_checkpoint(autoencoder_ckpt)
            autoencoder = {**architecture, "source": str(autoencoder_ckpt)}
        if autoencoder is None:
            raise ValueError(
                "OperatorModule needs a stage-1 model: pass autoencoder_ckpt=PATH (a trained AutoencoderModule "
                "checkpoint) or, for end-to-end training with freeze_autoencoder=False, autoencoder={...}"
            )
        source = autoencoder.get("source")
        if freeze_autoencoder and source is None:
            raise ValueError(
                "freeze_autoencoder=True with an untrained encoder/decoder would freeze random weights: "
                "give autoencoder_ckpt=PATH from stage 1, or set freeze_autoencoder=False"
            )
        if rollout_eval_mode not in ROLLOUT_MODES:
            raise ValueError(f"rollout_eval_mode={rollout_eval_mode!r} is unknown; choose one of {ROLLOUT_MODES}")
        latent_refinement = check_refinement(latent_refinement, freeze_autoencoder)  # with the defaults filled in
        inference_refinement = check_inference_refinement(inference_refinement)
        # Every term weight, the inverse terms' batch frequency and their curriculum live in one object.
        loss = settings_of(OperatorLoss, loss, "loss")
        arch = {k: autoencoder[k] for k in ARCH_KEYS if k in autoencoder and autoencoder[k] is not None}
        super().__init__(**arch, sampling=sampling, optim=optim, seed=seed, nan_policy=nan_policy)
        operator = dict(operator or {})
        if self.dataset_specs is not None:
            operator["num_datasets"] = len(self.dataset_specs)  # the dataset conditions the operator like dt
        self.operator = build_operator(operator, self.encoder.latent_tokens, self.encoder.latent_dim)
        if state is not None:
            adopt_autoencoder_state(self, state)
        # Checkpoints of this module carry the stage-1 weights in their state_dict: store the architecture and
        # where it came from, not the path to load, so loading never needs the stage-1 file again.
        autoencoder_ckpt, autoencoder = None, {**arch, "source": source}
        if autoencoder.get("grid_shape") is not None:  # a list, as YAML and jsonargparse read it back
            autoencoder["grid_shape"] = [int(size) for size in autoencoder["grid_shape"]]
        sampling, optim = self.sampling, self.optim_settings
        self.save_init_arguments()
        if freeze_autoencoder:
            for module in (self.encoder, self.decoder):
                module.requires_grad_(False)
                module.eval()
        self.operator_loss = loss
        self.init_forecast_evaluation(channel_names(self.field_spec), conservation)  # sets self.conserved
        states = getattr(self, "_forecast_states", None)  # one per dataset of a multi-dataset model
        undeclared = [n for n, state in states.items() if not state["conserved"]] if states else []
        if loss.base["lambda_conservation"] > 0 and (undeclared or not self.conserved):
            raise ValueError("loss.lambda_conservation > 0 needs the data set's conserved quantities: declare "
                             "data.conservation (conservation={name: {kind, fields}}) or set lambda_conservation=0")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose predictions relied on anchored decoding, which was removed.

        Checkpoints of earlier versions carry ``anchor_weights``: an empty list (the default, no anchoring)
        loads as before; fitted weights were part of the model's predictions, which would change without a
        word if they were dropped here, so such a checkpoint is refused.
        """
        super().on_load_checkpoint(checkpoint)
        weights = checkpoint.get("anchor_weights")
        if weights:
            raise CheckpointError(
                f"the checkpoint holds anchor_weights {list(weights)} of anchored decoding (stage2.anchor=true), "
                "which was removed, measured not to earn its place (docs/accuracy.md, \"Measured, not kept\"): "
                "this model would predict without that correction. Evaluate it with the version that trained it, "
                "or drop the weights to use it without: c = torch.load(p, weights_only=True); "
                "del c['anchor_weights']; torch.save(c, p)"
            )

    @property
    def inverse_weights(self) -> dict[str, float]:
        """The inverse terms' weights in the current epoch (curriculum applied, batch frequency not)."""
        return self.operator_loss.inverse_weights()

    # ----------------------------------------------------------- frozen parts
    def train(self, mode: bool = True):
        """Lightning calls .train() on the whole module every epoch; frozen parts must stay in eval mode."""
        super().train(mode)
        if self.hparams.freeze_autoencoder:
            self.encoder.eval()
            self.decoder.eval()
        return self

    # ------------------------------------------------------------ the model
    @property
    def model(self) -> UPT:
        """The surrogate this module trains, as a plain :class:`~upt_lightning.models.UPT` over this module's own
        normaliser, encoder, operator and decoder (the same parameters) and its refinement settings; every
        prediction of the module goes through it, so ``UPT.from_checkpoint`` predicts the same. Rebuilt (no
        parameters are made) only when the train/eval mode or a refinement setting in the hyperparameters
        changed, so a training step's encodes and steps do not build it again."""
        hp = self.hparams
        key = (self.training, _frozen(hp.latent_refinement), _frozen(hp.inference_refinement), int(hp.seed))
        cached = self.__dict__.get("_model_view")
        if cached is not None and cached[0] == key:
            return cached[1]
        model = UPT(self.normalizer, self.encoder, self.operator, self.decoder, self.field_spec, self.grid_shape,
                    datasets=self.dataset_specs, latent_refinement=hp.latent_refinement,
                    inference_refinement=hp.inference_refinement, seed=int(hp.seed))
        model.training = self.training  # not .train(): that would put the frozen parts in training mode
        # In __dict__, not as an attribute nn.Module registers: its parts are this module's, saved once.
        self.__dict__["_model_view"] = (key, model)
        return model

    def encode(self, fields: torch.Tensor, coords: torch.Tensor, meta: Mapping | None = None) -> torch.Tensor:
        """Normalised fields (B, N, C) at coords (B, N, d) -> latent (B, T, D), refined when
        ``latent_refinement`` is set (models/refinement.py): in training, the latent cache and evaluation alike.
        The inverse decoding loss re-encodes with the encoder alone."""
        return self.model.encode(fields, coords, meta)

    def step(self, latent: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """One operator step: latent (B, T, D), dt (B,) in frame units -> next latent (B, T, D); a multi-dataset
        operator is conditioned on the active dataset."""
        return self.model.step(latent, dt)

    def predict_next_normalised(self, b) -> torch.Tensor:
        """The next frame of a prepared batch at its points: normalised (B, N, C) (:meth:`UPT.predict_next_normalised`)."""
        return self.model.predict_next_normalised(b.fields, b.coords, b.meta, b.dt)

    def rollout_batch_normalised(self, b, steps: int) -> torch.Tensor:
        """``steps`` frames in ``rollout_eval_mode``, decoded at the batch's points: normalised (B, steps, N, C)."""
        return self.model.rollout_normalised(b.fields, b.coords, b.meta, b.dt, steps, b.coords,
                                             self.hparams.rollout_eval_mode)

    @torch.no_grad()
    def rollout(self, fields: torch.Tensor, coords: torch.Tensor, steps: int, dt: torch.Tensor | float | None = None,
                query_points: torch.Tensor | None = None, mask: torch.Tensor | None = None, mode: str = "latent",
                decode_steps: Sequence[int] | None = None, dataset: str | None = None) -> torch.Tensor:
        """Raw fields (B, N, C) at raw coords (B, N, d) -> raw predictions (B, S, Q, C) at ``query_points``
        (default ``coords``); arguments as :meth:`UPT.rollout` (``query_points`` is its ``points``).
        ``dataset`` switches a multi-dataset module to that dataset (default: the active one)."""
        if dataset is not None:
            self.activate_dataset(dataset)
        return self.model.rollout(fields, coords, steps, mode=mode, decode_steps=decode_steps, points=query_points,
                                  dt=dt, mask=mask, dataset=self.active_dataset)

    def forward(self, fields, coords, dt=None, query_points=None, mask=None) -> torch.Tensor:
        """Raw fields (B, N, C) -> raw next-step prediction (B, Q, C)."""
        return self.rollout(fields, coords, 1, dt=dt, query_points=query_points, mask=mask)[:, 0]

    def encode_frames(self, frames: torch.Tensor, coords: torch.Tensor, meta: Mapping) -> torch.Tensor:
        """Normalised frames (B, K, N, C) -> latents (B, K, T, D), all K frames in one encoder call."""
        batch, steps = frames.shape[:2]
        flat_meta = dict(meta)
        if "mask" in flat_meta:
            flat_meta["mask"] = meta["mask"].repeat_interleave(steps, dim=0)
        flat_coords = coords.repeat_interleave(steps, dim=0)
        latents = self.encode(frames.flatten(0, 1), flat_coords, flat_meta)
        return latents.unflatten(0, (batch, steps))

    # --------------------------------------------------------------- training
    def training_reads_fields(self) -> bool:
        """Whether a training step may read the batch's fields: False when every configured loss term
        works in latent space (a latent cache then needs to serve no fields at all)."""
        return self.operator_loss.reads_fields() or not self.hparams.freeze_autoencoder

    def training_step(self, batch, batch_idx):
        frozen = bool(self.hparams.freeze_autoencoder)
        weights = self.operator_loss.weights(batch_idx)
        rolling = self.operator_loss.base["lambda_rollout"] > 0
        cached = batch.get("latents")
        if cached is not None and self.dataset_specs is not None:
            raise ValueError("a latent cache serves one dataset; train a multi-dataset model without stage2.latent_cache")
        if cached is not None and not frozen:
            raise ValueError("batch['latents'] from a latent cache needs freeze_autoencoder=True")
        # A latent cache built without fields (see training_reads_fields) serves latents and dt only.
        b = self.prepare_batch(batch) if "fields" in batch else None
        if b is None and cached is None:
            raise ValueError("the batch has neither 'fields' nor cached 'latents' (DataModule or LatentCache batches)")
        horizon = cached.shape[1] - 1 if b is None else b.targets.shape[1]
        size = cached.shape[0] if b is None else b.fields.shape[0]
        dt = b.dt if b is not None else self.normalizer.normalize_dt(batch["dt"]).reshape(-1).expand(size)
        if rolling and horizon < 2:
            raise ValueError(
                "loss.lambda_rollout > 0 needs rollout windows in training: set data.train_horizon >= 2"
            )
        used_targets = horizon if rolling else 1
        if cached is not None:
            # A latent cache (frozen encoder only) replaces both encoder calls.
            z_t, z_targets = cached[:, 0], cached[:, 1 : 1 + used_targets]
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
                z_t = self.encode(b.fields, b.coords, b.meta)
            with torch.no_grad():
                z_targets = self.encode_frames(b.targets[:, :used_targets], b.coords, b.meta)
        z_pred = self.step(z_t, dt)

        pred_rollout = target_rollout = None
        if rolling:
            latents = [z_pred]
            for _ in range(1, horizon):
                latents.append(self.step(latents[-1], dt))
            pred_rollout, target_rollout = torch.stack(latents, dim=1), z_targets

        sampling = self.sampling
        bundle = self.operator_loss(
            batch_idx, encoded_latent=z_pred, pred_next=z_pred, target_next=z_targets[:, 0],
            pred_rollout=pred_rollout, target_rollout=target_rollout, num_queries=sampling.num_queries,
            query_strategy=sampling.strategy, grid_shape=self.grid_shape, generator=self.query_generator(),
            per_sample=sampling.per_sample, sampled_gradient=self.operator_loss.sampled_gradient,
            **self._field_loss_inputs(b, z_pred, weights),
        )
        loss = bundle.total
        logs = {f"train/{name}": value for name, value in bundle.components.items()}
        lambda_recon = self.operator_loss.lambda_recon
        if not frozen and lambda_recon > 0:
            recon = inverse_encoding_loss(
                split_fields(b.fields, self.field_spec), z_t, self.decoder, b.coords, 1.0, sampling.num_queries,
                sampling.strategy, self.grid_shape, generator=self.query_generator(),
                per_sample=sampling.per_sample, mask=b.mask,
            )
            loss = loss + lambda_recon * recon
            logs["train/L_recon"] = recon
        components = {name.removeprefix("train/"): value for name, value in logs.items()}
        if not self.loss_is_usable(loss, components, batch, batch_idx):
            return None  # nan_policy=skip: Lightning runs no backward and no update for this batch
        logs["train/loss"] = loss
        self.log_dict(logs, batch_size=size)
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=size)
        inverse = self.inverse_weights
        self.log_dict(
            {"train/w_inv_enc": inverse["lambda_inv_enc"], "train/w_inv_dec": inverse["lambda_inv_dec"]},
            on_step=False, on_epoch=True, batch_size=size, sync_dist=True,  # equal on all ranks; quiets DDP's advice
        )
        return loss

    def _field_loss_inputs(self, b, z_pred: torch.Tensor, weights: Mapping[str, float]) -> dict:
        """The loss bundle's physical-space inputs (next frame, points, models); none for a batch without fields."""
        if b is None:
            needing = [key for key in ("lambda_inv_enc", "lambda_inv_dec", "lambda_spectral", "lambda_conservation")
                       if weights[key] > 0]
            if needing:
                raise ValueError(
                    f"the batch holds cached latents without fields, but {needing} > 0 compare fields: build the "
                    "latent cache with fields=True (the stage-2 pipeline does when training_reads_fields())"
                )
            return {}
        next_fields = b.targets[:, 0]
        conserving = weights["lambda_conservation"] > 0
        spectral = self.operator_loss.base["lambda_spectral"] > 0
        decoded = self.decode(z_pred, b.coords) if spectral or conserving else None
        spectral_pred = decoded if spectral else None
        return dict(
            input_fields=split_fields(next_fields, self.field_spec), decoder=self.decoder, input_positions=b.coords,
            encoder=self.encoder, query_positions=b.coords, coords=b.coords, meta=b.meta, mask=b.mask,
            spectral_pred=spectral_pred, spectral_target=next_fields if spectral_pred is not None else None,
            # The declared integrals are physical quantities: compared in physical units.
            conservation_pred=self.normalizer.denormalize_fields(decoded) if conserving else None,
            conservation_target=b.raw_targets[:, 0] if conserving else None,
            conservation_quantities=self.conserved if conserving else None,
        )


def _frozen(settings: Mapping[str, Any] | None) -> tuple | None:
    """A refinement setting as a comparable snapshot: a dict changed in place compares unequal to before."""
    return None if settings is None else tuple(sorted(settings.items()))
