"""The UPT model a researcher can lift out: normaliser, encoder, latent operator, decoder and inference refinement
in one ``nn.Module``, loadable from any stage-2 checkpoint without Lightning.

    model = UPT.from_checkpoint("outputs/<run>/stage2/checkpoints/last.ckpt")
    pred = model.rollout(fields, coords, steps=10)  # (B, 10, N, C) in physical units

Fields -> encoder -> latent tokens (B, T, D) -> operator, step after step -> decoder at any points. In
``mode="latent"`` the fields are encoded once and the latent stepped; in ``mode="physical"`` every step is
decoded at the input's points and encoded again. With ``inference_refinement`` the latent of the starting frame
is refined against the decoder and the correction carried, damped, into the latent-mode predictions
(models/refinement.py). :class:`~upt_lightning.modules.OperatorModule` trains this model and predicts through
it, so a prediction here equals the training module's.
"""

from __future__ import annotations

import operator as _operator
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from upt_lightning.fields import cat_fields, split_fields
from upt_lightning.models.builders import build_autoencoder_parts, build_operator
from upt_lightning.models.multi_dataset import DatasetSwitch
from upt_lightning.models.refinement import check_inference_refinement, check_refinement, refine_latents

ROLLOUT_MODES = ("latent", "physical")
# The state-dict prefixes of the model's parts in a stage-2 checkpoint.
PARTS = ("normalizer", "encoder", "operator", "decoder")


def check_decode_steps(decode_steps: Sequence[int] | None, steps: int) -> list[int]:
    """The 1-based steps to decode, in the order asked for (all of ``1..steps`` when None).

    Duplicates, steps outside ``1..steps`` and an empty list raise ValueError: each would otherwise
    return fewer or other frames than asked for, and the caller would index the wrong step.
    """
    if decode_steps is None:
        return list(range(1, steps + 1))
    try:
        wanted = [_operator.index(k) for k in decode_steps if not isinstance(k, bool)]
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


def encoder_meta(grid_shape: Sequence[int] | None, mask: torch.Tensor | None) -> dict:
    """What an encoder needs beside fields and points: the grid shape of grid data, a padding mask (B, N)."""
    meta: dict = {}
    if grid_shape is not None:
        meta["grid_shape"] = tuple(grid_shape)
    if mask is not None:
        meta["mask"] = mask
    return meta


def carried(latent: torch.Tensor, correction: torch.Tensor | None, k: int, carry: float) -> torch.Tensor:
    """The latent decoded k steps ahead: ``latent + carry**k * correction`` (B, T, D); ``latent`` without one."""
    return latent if correction is None else latent + carry**k * correction


class UPT(nn.Module):
    """Universal Physics Transformer surrogate: ``encode``, ``step``, ``decode``, ``rollout``.

    Args:
        normalizer: :class:`~upt_lightning.models.normalizer.FieldNormalizer` (raw <-> model units), or a
            :class:`DatasetSwitch` of them for a multi-dataset model.
        encoder: fields at points -> latent (B, T, D) (GridEncoder / MeshEncoder, or a DatasetSwitch).
        operator: :class:`~upt_lightning.models.LatentOperator`, latent (B, T, D), dt (B,) -> next latent.
        decoder: :class:`~upt_lightning.models.AnyPointDecoder` (or a DatasetSwitch).
        field_spec: ordered fields and channels, e.g. ``{"u": 1, "v": 1}`` (the first dataset's for several).
        grid_shape: the grid of grid data (points row-major), None for meshes.
        datasets: ``{name: {field_channels, grid_shape, ...}}`` of a multi-dataset model (parts are switches;
            every call names its dataset), None for one dataset.
        latent_refinement: ``{steps, lr, points, rate}`` applied to every encode, or None.
        inference_refinement: ``{steps, lr, points, rate, carry}`` for the starting frame of predictions, or None.
        seed: seed of the refinement's point draws (deterministic predictions).
    """

    def __init__(self, normalizer: nn.Module, encoder: nn.Module, operator: nn.Module, decoder: nn.Module,
                 field_spec: Mapping[str, int], grid_shape: Sequence[int] | None = None, *,
                 datasets: Mapping[str, Mapping[str, Any]] | None = None,
                 latent_refinement: Mapping[str, Any] | None = None,
                 inference_refinement: Mapping[str, Any] | None = None, seed: int = 0):
        super().__init__()
        self.normalizer, self.encoder, self.operator, self.decoder = normalizer, encoder, operator, decoder
        self.datasets = None if datasets is None else {name: dict(spec) for name, spec in datasets.items()}
        if self.datasets is not None and not isinstance(encoder, DatasetSwitch):
            raise ValueError("datasets= needs per-dataset parts (DatasetSwitch normaliser, encoder and decoder)")
        self._field_spec = dict(field_spec)
        self._grid_shape = None if grid_shape is None else tuple(int(s) for s in grid_shape)
        self.latent_refinement = check_refinement(latent_refinement)
        self.inference_refinement = check_inference_refinement(inference_refinement)
        self.seed = int(seed)

    # ------------------------------------------------------------- datasets
    @property
    def dataset(self) -> str | None:
        """The dataset the parts are routed to (a multi-dataset model), None for one dataset."""
        return None if self.datasets is None else self.encoder.active

    @property
    def field_spec(self) -> dict[str, int]:
        return dict(self.datasets[self.dataset]["field_channels"]) if self.datasets else self._field_spec

    @property
    def grid_shape(self) -> tuple[int, ...] | None:
        if not self.datasets:
            return self._grid_shape
        grid = self.datasets[self.dataset].get("grid_shape")
        return None if grid is None else tuple(int(s) for s in grid)

    def route(self, dataset: str | None) -> None:
        """Route the parts to ``dataset`` (a multi-dataset model; None keeps the current one). A one-dataset
        model refuses a name: there is nothing to route."""
        if dataset is None:
            return
        if self.datasets is None:
            raise ValueError(f"dataset={dataset!r} given, but this model was trained on one dataset")
        if dataset not in self.datasets:
            raise KeyError(f"unknown dataset {dataset!r}; this model was trained on {list(self.datasets)}")
        for part in (self.normalizer, self.encoder, self.decoder):
            part.activate(dataset)

    def meta(self, mask: torch.Tensor | None = None) -> dict:
        """What the encoder needs beside fields and points (:func:`encoder_meta`)."""
        return encoder_meta(self.grid_shape, mask)

    # ----------------------------------------------------------- model steps (normalised units)
    def encode(self, fields: torch.Tensor, coords: torch.Tensor, meta: Mapping | None = None) -> torch.Tensor:
        """Normalised fields (B, N, C) at coords (B, N, d) in [0, 1]^d -> latent (B, T, D), refined when
        ``latent_refinement`` is set."""
        latent = self.encoder(split_fields(fields, self.field_spec), coords, dict(meta or {}))
        if self.latent_refinement:
            latent = self.refine(latent, fields, coords, meta, self.latent_refinement)
        return latent

    def refine(self, latent: torch.Tensor, fields: torch.Tensor, coords: torch.Tensor, meta: Mapping | None,
               settings: Mapping[str, Any]) -> torch.Tensor:
        """``latent`` (B, T, D) refined against the decoder on normalised ``fields`` (B, N, C) at ``coords`` by
        ``settings`` ({steps, lr, points, rate}; models/refinement.py)."""
        return refine_latents(self.decode, latent, fields, coords, steps=settings["steps"], lr=settings["lr"],
                              points=settings["points"], rate=settings["rate"], mask=(meta or {}).get("mask"),
                              seed=self.seed)

    def step(self, latent: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """One operator step: latent (B, T, D), dt (B,) in frame units -> next latent (B, T, D); a multi-dataset
        operator is conditioned on the routed dataset."""
        if self.datasets is not None:
            return self.operator(latent, dt, dataset=list(self.datasets).index(self.dataset))
        return self.operator(latent, dt)

    def decode(self, latent: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Latent (B, T, D) at points (B, Q, d) -> normalised fields (B, Q, C). Outside training, points shared by
        every sample are decoded once (the decoder's shared path)."""
        return cat_fields(self.decoder(points, latent, share_points=not self.training), self.field_spec)

    def start(self, fields: torch.Tensor, coords: torch.Tensor, meta: Mapping | None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The latent a prediction steps from (B, T, D) and the correction (B, T, D) that inference refinement
        carries into its decodes (None without inference refinement)."""
        latent = self.encode(fields, coords, meta)
        if not self.inference_refinement:
            return latent, None
        return latent, self.refine(latent, fields, coords, meta, self.inference_refinement) - latent

    @property
    def carry(self) -> float:
        return float(self.inference_refinement["carry"]) if self.inference_refinement else 0.0

    def predict_next_normalised(self, fields: torch.Tensor, coords: torch.Tensor, meta: Mapping | None,
                                dt: torch.Tensor) -> torch.Tensor:
        """Encode, one step, decode at ``coords``: normalised (B, N, C), with the carried correction."""
        latent, correction = self.start(fields, coords, meta)
        return self.decode(carried(self.step(latent, dt), correction, 1, self.carry), coords)

    def rollout_normalised(self, fields: torch.Tensor, coords: torch.Tensor, meta: Mapping | None,
                           dt: torch.Tensor, steps: int, points: torch.Tensor, mode: str = "latent",
                           decode_steps: Sequence[int] | None = None) -> torch.Tensor:
        """Normalised fields (B, N, C) -> normalised predictions (B, S, Q, C) at ``points`` (B, Q, d), S in the
        order of ``decode_steps``.

        Steps past the last one asked for are not taken. In physical mode each step's prediction is decoded at
        ``coords`` and re-encoded; a step asked for at those same points reuses that decode. Latent-mode
        predictions carry inference refinement's correction.
        """
        wanted = check_decode_steps(decode_steps, steps)
        last = max(wanted)
        if mode == "latent":
            latent, correction = self.start(fields, coords, meta)
        else:  # re-encoded every step: nothing to carry
            latent, correction = self.encode(fields, coords, meta), None
        decoded: dict[int, torch.Tensor] = {}
        for k in range(1, last + 1):
            latent = self.step(latent, dt)
            reencode = mode == "physical" and k < last
            on_grid = self.decode(latent, coords) if reencode else None
            if k in wanted:
                decoded[k] = (on_grid if points is coords and on_grid is not None
                              else self.decode(carried(latent, correction, k, self.carry), points))
            if reencode:
                latent = self.encode(on_grid, coords, meta)
        return torch.stack([decoded[k] for k in wanted], dim=1)

    # ------------------------------------------------------------ physical units
    @torch.no_grad()
    def rollout(self, fields: torch.Tensor, coords: torch.Tensor, steps: int, *, mode: str = "latent",
                decode_steps: Sequence[int] | None = None, points: torch.Tensor | None = None,
                dt: torch.Tensor | float | None = None, mask: torch.Tensor | None = None,
                dataset: str | None = None) -> torch.Tensor:
        """Autoregressive prediction in physical units.

        Args:
            fields: raw fields (B, N, C) at raw ``coords`` (B, N, d); ``mask`` (B, N) for padded meshes.
            steps: number of operator steps.
            mode: "latent" encodes once and steps in latent space; "physical" decodes and re-encodes at
                ``coords`` after every step.
            decode_steps: distinct 1-based steps in ``1..steps`` to decode, in the order wanted (default all).
            points: raw points (B, Q, d) to decode at (default ``coords``): any resolution.
            dt: physical time step (float or (B,)); default the training data's frame spacing.
            dataset: which dataset the fields belong to (a multi-dataset model; required there).
        Returns:
            raw predictions (B, S, Q, C), S = len(decode_steps) or steps.
        """
        if mode not in ROLLOUT_MODES:
            raise ValueError(f"mode={mode!r} is unknown; choose one of {ROLLOUT_MODES}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if self.datasets is not None and dataset is None:
            raise ValueError(f"this model serves the datasets {list(self.datasets)}: pass dataset=<name>")
        self.route(dataset)
        norm = self.normalizer
        coords_n = norm.normalize_coords(coords)
        points_n = coords_n if points is None else norm.normalize_coords(points)
        step_dt = norm.normalize_dt(norm.dt_ref if dt is None else dt).reshape(-1).expand(fields.shape[0])
        pred = self.rollout_normalised(norm.normalize_fields(fields), coords_n, self.meta(mask), step_dt, steps,
                                       points_n, mode, decode_steps)
        return norm.denormalize_fields(pred)

    def forward(self, fields: torch.Tensor, coords: torch.Tensor, **kwargs) -> torch.Tensor:
        """Raw fields (B, N, C) -> raw next-step prediction (B, Q, C); keywords as :meth:`rollout`'s."""
        return self.rollout(fields, coords, 1, **kwargs)[:, 0]

    # ------------------------------------------------------------ checkpoints
    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> UPT:
        """An untrained UPT of the architecture in a stage-2 checkpoint's hyperparameters."""
        arch = dict(hparams["autoencoder"])
        normalizer, encoder, decoder, specs = build_autoencoder_parts(arch)
        settings = dict(hparams.get("operator") or {})
        if specs is not None:
            settings["num_datasets"] = len(specs)
        operator = build_operator(settings, encoder.latent_tokens, encoder.latent_dim)
        return cls(normalizer, encoder, operator, decoder, arch["field_channels"], arch.get("grid_shape"),
                   datasets=specs, latent_refinement=hparams.get("latent_refinement"),
                   inference_refinement=hparams.get("inference_refinement"), seed=int(hparams.get("seed", 0)))

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> UPT:
        """The trained UPT of a stage-2 checkpoint (``stage2/checkpoints/*.ckpt`` of a run, or the CLI's), in
        eval mode. The file is read with ``weights_only=True`` (nothing in it can run code); stage-1 and FNO
        checkpoints are refused with the reason."""
        from upt_lightning.runtime.checkpoints import KIND_NAMES, checkpoint_kind, read_checkpoint

        checkpoint = read_checkpoint(path, "UPT checkpoint")
        kind = checkpoint_kind(checkpoint)
        if kind != "operator":
            raise ValueError(f"{path} is {KIND_NAMES.get(kind, 'not a checkpoint of this library')}; "
                             "UPT.from_checkpoint needs a stage-2 (OperatorModule) checkpoint, e.g. "
                             "<run>/stage2/checkpoints/last.ckpt")
        model = cls.from_hparams(checkpoint["hyper_parameters"])
        state = {k: v for k, v in checkpoint["state_dict"].items() if k.split(".", 1)[0] in PARTS}
        model.load_state_dict(state, strict=True)
        return model.to(map_location).eval()
