"""Latent cache: the frozen encoder's latents of every training window, computed once.

With a frozen encoder, stage 2 encodes the same frames in every epoch. ``LatentCache.build``
encodes every window of a :class:`TrajectoryWindows` once (batched, ``no_grad``, eval mode) and
serves the window's items with ``"latents"`` added; ``OperatorModule.training_step`` then skips
both encoder calls. By default the fields stay in the items because the inverse losses compare
decoded predictions with them (a configured loss must run, never be skipped for lack of inputs). Built with
``fields=False`` (when no loss term reads fields, ``OperatorModule.training_reads_fields()``) an item
is only its latents and ``dt``: nothing is read from the data file while training.

The latents depend on the encoder's weights and settings and on the normalisation statistics, so
the cache stores a fingerprint of them; ``check(module)`` (also run by ``load``) compares it with
the module to be trained, and a mismatch is an error rather than silently stale targets.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from upt_lightning.data.collate import collate_windows
from upt_lightning.data.datasets import TrajectoryWindows

SETTING_TYPES = (bool, int, float, str, tuple)


def _hash_state(digest, sub: torch.nn.Module) -> None:
    for name, tensor in sorted(sub.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())


def encoder_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of what the latents depend on: ``module.encoder``'s weights, buffers and scalar
    settings (e.g. radius, supernodes) and ``module.normalizer``'s statistics; with latent refinement
    (models/refinement.py) also its settings and the decoder's weights, which the refinement reads."""
    digest = hashlib.sha256()
    for part in ("encoder", "normalizer"):
        sub = getattr(module, part, None)
        if sub is None:
            raise TypeError(
                f"{type(module).__name__} has no {part!r}: give the stage-2 OperatorModule (or stage-1 "
                "AutoencoderModule) whose encoder makes the latents"
            )
        settings = {k: v for k, v in vars(sub).items()
                    if isinstance(v, SETTING_TYPES) and k != "training" and not k.startswith("_")}
        digest.update(f"{part}:{type(sub).__name__}:{json.dumps(settings, sort_keys=True, default=str)}".encode())
        _hash_state(digest, sub)
    refinement = getattr(module, "hparams", {}).get("latent_refinement")
    if refinement:
        digest.update(f"refinement:{json.dumps(dict(refinement), sort_keys=True)}".encode())
        _hash_state(digest, module.decoder)
    return digest.hexdigest()


def collate_cached_windows(items: Sequence[dict], with_mask: bool = False) -> dict[str, torch.Tensor]:
    """``collate_windows`` plus ``latents`` (B, K+1, T, D)."""
    batch = collate_windows(items, with_mask=with_mask)
    batch["latents"] = torch.stack([item["latents"] for item in items])
    return batch


def collate_cached_mesh_windows(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """:func:`collate_cached_windows` with padding and mask (mesh data); picklable for workers."""
    return collate_cached_windows(items, with_mask=True)


def collate_latents(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Items of a cache without fields: ``latents`` (B, K+1, T, D), ``dt`` (B,), ``traj``, ``t0`` (B,) int64."""
    if not items:
        raise ValueError("cannot collate an empty list of windows")
    return {
        "latents": torch.stack([item["latents"] for item in items]),
        "dt": torch.stack([item["dt"] for item in items]),
        "traj": torch.tensor([item["traj"] for item in items], dtype=torch.int64),
        "t0": torch.tensor([item["t0"] for item in items], dtype=torch.int64),
    }


def _window_index(windows: TrajectoryWindows) -> torch.Tensor:
    """``(len(windows), 2)`` long: (trajectory, t0) of every window, to recognise the same windows."""
    return torch.tensor([windows.window(i) for i in range(len(windows))], dtype=torch.long).reshape(-1, 2)


class LatentCache(Dataset):
    """The items of ``windows`` with ``"latents"`` ``(K+1, T, D)``: encoded frames t0, ..., t0+K.

    Build it with :meth:`build` (or :meth:`load`); batch it with ``collate_fn``. ``latents`` is
    ``(len(windows), K+1, T, D)`` float32 on the CPU, ``fingerprint`` the
    :func:`encoder_fingerprint` of the module that encoded them, ``dt`` ``(len(windows),)`` the
    windows' raw time steps. ``fields=False`` makes items ``{"latents", "dt", "traj", "t0"}``
    without reading the file (needs ``dt``).
    """

    def __init__(self, windows: TrajectoryWindows, latents: torch.Tensor, fingerprint: str,
                 dt: torch.Tensor | None = None, fields: bool = True):
        expected = (len(windows), windows.horizon + 1)
        if latents.ndim != 4 or tuple(latents.shape[:2]) != expected:
            raise ValueError(
                f"latents must be (windows, horizon + 1, T, D) = ({expected[0]}, {expected[1]}, T, D) for these "
                f"windows, got {tuple(latents.shape)}: rebuild the cache for this dataset"
            )
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or Inf: the encoder or the data produced non-finite values")
        if dt is not None and tuple(dt.shape) != (len(windows),):
            raise ValueError(f"dt must be ({len(windows)},), one time step per window, got {tuple(dt.shape)}")
        if not fields and dt is None:
            raise ValueError("a latent cache without fields needs each window's dt: build it with LatentCache.build")
        self.windows = windows
        self.latents = latents
        self.fingerprint = fingerprint
        self.dt = dt
        self.fields = bool(fields)
        if not self.fields:
            self.collate_fn = collate_latents
        else:
            mesh = windows.source.grid_shape is None
            self.collate_fn = collate_cached_mesh_windows if mesh else collate_cached_windows

    @classmethod
    @torch.no_grad()
    def build(cls, windows: TrajectoryWindows, module, batch_size: int = 32, num_workers: int = 0,
              fields: bool = True) -> LatentCache:
        """Encode every window with ``module`` (an OperatorModule or AutoencoderModule, encoder frozen),
        batched on the module's device; ``fields`` as in the class."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        trainable = [name for name, p in module.encoder.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(
                f"the encoder has trainable parameters ({trainable[0]}, ...): cached latents would go stale after "
                "the first optimiser step; a latent cache needs freeze_autoencoder=True"
            )
        mesh = windows.source.grid_shape is None
        # Its own generator: iterating a DataLoader draws a seed, which must not shift the global RNG (a
        # cached run then shuffles its batches like an uncached one with the same seed).
        loader = DataLoader(windows, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=functools.partial(collate_windows, with_mask=mesh), generator=torch.Generator())
        device = next(module.parameters()).device
        was_training = module.training
        module.eval()
        parts, dts = [], []
        try:
            for batch in loader:
                prepared = module.prepare_batch(
                    {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                )
                frames = torch.cat([prepared.fields.unsqueeze(1), prepared.targets], dim=1)
                parts.append(_encode_frames(module, frames, prepared.coords, prepared.meta).float().cpu())
                dts.append(batch["dt"].float().cpu())
        finally:
            module.train(was_training)
        return cls(windows, torch.cat(parts), encoder_fingerprint(module), torch.cat(dts), fields)

    def check(self, module) -> None:
        """Raise ValueError unless ``module``'s encoder and statistics are those the cache was built with."""
        if encoder_fingerprint(module) != self.fingerprint:
            raise ValueError(
                "the latent cache was built with a different encoder or different normalisation statistics than "
                "this module's (fingerprints differ): rebuild it with LatentCache.build(windows, module)"
            )

    def save(self, path: str | os.PathLike) -> None:
        torch.save({"latents": self.latents, "fingerprint": self.fingerprint, "dt": self.dt,
                    "windows": _window_index(self.windows)}, path)

    @classmethod
    def load(cls, path: str | os.PathLike, windows: TrajectoryWindows, module, fields: bool = True) -> LatentCache:
        """Read a saved cache and check that it belongs to ``windows`` and to ``module``'s encoder."""
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not torch.equal(saved["windows"], _window_index(windows)):
            raise ValueError(
                f"the latent cache {path} was built for other windows (trajectories, start frames or horizon "
                "differ): rebuild it for this dataset"
            )
        cache = cls(windows, saved["latents"], saved["fingerprint"], saved.get("dt"), fields)
        cache.check(module)
        return cache

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        if not self.fields:
            traj, t0 = self.windows.window(index)
            return {"latents": self.latents[index], "dt": self.dt[index], "traj": traj, "t0": t0}
        return {**self.windows[index], "latents": self.latents[index]}


def _encode_frames(module, frames: torch.Tensor, coords: torch.Tensor, meta: dict) -> torch.Tensor:
    """Normalised frames (B, F, N, C) -> latents (B, F, T, D) in one encoder call."""
    batch, count = frames.shape[:2]
    flat_meta = dict(meta)
    if "mask" in flat_meta:
        flat_meta["mask"] = meta["mask"].repeat_interleave(count, dim=0)
    latents = module.encode(frames.flatten(0, 1), coords.repeat_interleave(count, dim=0), flat_meta)
    return latents.unflatten(0, (batch, count))
