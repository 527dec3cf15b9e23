"""LightningDataModules over trajectory files: grids (PDEBench layouts) and meshes (upt_mesh,
shared_mesh).

Trajectories are split into train/val/test by a seeded permutation of their ids, so no
trajectory is in two splits. Normalisation statistics come from the train split only. Batches
hold raw physical values: the LightningModules normalise with ``stats`` and keep it in their
checkpoints, so a loaded model maps raw fields to raw predictions.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler, WeightedRandomSampler

from upt_lightning.data.collate import collate_mesh_windows, collate_windows
from upt_lightning.data.datasets import TrajectoryWindows
from upt_lightning.data.even_shards import even_eval_shards
from upt_lightning.data.readers import open_source
from upt_lightning.data.readers.base import TrajectorySource
from upt_lightning.data.split_stats import check_split, compute_stats, split_trajectories
from upt_lightning.errors import DataError, DataFileNotFoundError
from upt_lightning.data.workers import check_num_workers, resolve_num_workers

log = logging.getLogger("upt_lightning.data")


class LoaderSettings:
    """What a DataModule's loaders read from its ``pin_memory`` hyperparameter and its trainer."""

    def _pin_memory(self) -> bool:
        """``pin_memory``; "auto" pins when the trainer runs on a CUDA device (page-locked batches copy to the
        card asynchronously), and not on the CPU, where pinning only costs."""
        setting = self.hparams.pin_memory
        if setting != "auto":
            return bool(setting)
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _processes_per_node(self) -> int:
        """Training processes sharing this node's CPUs: the trainer's devices per node (1 without a trainer)."""
        trainer = getattr(self, "trainer", None)
        return max(1, int(getattr(trainer, "num_devices", 1) or 1)) if trainer is not None else 1


class TrajectoryDataModule(LoaderSettings, L.LightningDataModule):
    """Shared logic of :class:`GridDataModule` and :class:`MeshDataModule`.

    ``train_dataloader`` yields windows of ``train_horizon`` steps, shuffled. ``val_dataloader``
    and ``test_dataloader`` return ``[one-step loader, rollout loader]``: next-step windows over
    the split, and one window of ``rollout_horizon`` steps per trajectory from each frame of
    ``rollout_starts`` (rollout metrics average over all of them; see :func:`rollout_windows`).
    Frames are ``frame_stride`` file steps apart; windows start every ``window_stride`` frames.

    ``frame_weight_power`` > 0 draws the training windows (with replacement, as many per epoch as there
    are windows) with weight ``(n + 1) ** -frame_weight_power``, ``n`` the number of the window's first
    frame along its trajectory: the first frames of a decaying flow are the hardest to reconstruct and
    the rarest kind of state in the file, and they are where every rollout starts.

    ``max_train_trajectories``: train on the first that many trajectories of the training split only (its
    statistics too); validation and test are unchanged, so runs with several limits compare on the same sets.

    ``period``: the domain's period along each axis in the file's units (one number for every axis, or
    one per axis), None for a domain that is not periodic. With a period the statistics map one period
    onto [0, 1) (``coord_max - coord_min = period``, the points centred in it) instead of stretching the
    points' own extent over [0, 1], so that points one period apart get coordinates exactly 1 apart: the
    decoder's Fourier features and its periodic locality bias (``decoder.periodic``) then see the true
    neighbours across the boundary.
    """

    is_mesh = False

    def __init__(
        self,
        path: str | os.PathLike,
        layout: str = "auto",
        generate: str | None = None,
        generate_options: dict | None = None,
        batch_size: int = 16,
        num_workers: int | str = 0,
        train_horizon: int = 1,
        rollout_horizon: int = 10,
        frame_stride: int = 1,
        window_stride: int = 1,
        rollout_starts: Sequence[int] = (0,),
        split: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        max_stat_trajectories: int = 64,
        pin_memory: bool | str = "auto",
        period: float | Sequence[float] | None = None,
        frame_weight_power: float = 0.0,
        max_train_trajectories: int | None = None,
    ) -> None:
        super().__init__()
        period = check_period(period)
        if max_train_trajectories is not None and (
                isinstance(max_train_trajectories, bool) or not isinstance(max_train_trajectories, int)
                or max_train_trajectories < 1):
            raise ValueError(f"max_train_trajectories={max_train_trajectories!r} must be an integer >= 1, or null "
                             "for the whole training split")
        for name, value in (
            ("batch_size", batch_size),
            ("train_horizon", train_horizon),
            ("rollout_horizon", rollout_horizon),
            ("frame_stride", frame_stride),
            ("window_stride", window_stride),
            ("max_stat_trajectories", max_stat_trajectories),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        check_num_workers(num_workers)
        if pin_memory not in (True, False, "auto"):
            raise ValueError(f"pin_memory={pin_memory!r} must be true, false or 'auto' (pin when training on CUDA)")
        if not (isinstance(frame_weight_power, (int, float)) and math.isfinite(frame_weight_power)
                and frame_weight_power >= 0):
            raise ValueError(
                f"frame_weight_power must be a finite number >= 0 (0 draws every training window equally often), "
                f"got {frame_weight_power!r}"
            )
        rollout_starts = check_rollout_starts(rollout_starts)
        self.save_hyperparameters()
        self.hparams["rollout_starts"] = rollout_starts
        # The checked list, explicitly: under LightningCLI save_hyperparameters keeps the arguments as given
        # (a bare float), not this frame's reassigned value.
        self.hparams["period"] = period
        # A str, not a Path, so checkpoints holding these hyperparameters load with weights_only=True.
        self.hparams["path"] = str(path)
        self.path = Path(path)
        self.split = check_split(split)
        self.source: TrajectorySource | None = None
        self._stats: dict[str, torch.Tensor] | None = None
        # A LatentCache of train_set (set by LatentCacheCallback): the training loader serves it instead.
        self.latent_cache: Dataset | None = None

    def prepare_data(self) -> None:
        """Create the missing file with ``generate_dataset`` when ``generate`` names a dataset; refuse a file
        of ours that was generated with other settings than ``generate`` and ``generate_options`` ask for."""
        if self.path.exists():
            if self.hparams.generate is not None:
                self._check_generated_file()
            return
        if self.hparams.generate is None:
            raise DataFileNotFoundError(
                f"data file {self.path} does not exist; point path at an existing file, or set "
                "generate=<name of a built-in dataset> (see upt_lightning.data.generate) "
                "to create it"
            )
        from upt_lightning.data.generate import generate_dataset

        generate_dataset(self.hparams.generate, self.path, **(self.hparams.generate_options or {}))

    def _check_generated_file(self) -> None:
        """A DataError when the existing file was written by our generator with other settings than requested.

        The file name encodes only some settings (the config's names carry resolution and count), so a run
        with, say, more time steps would otherwise train and report on the old file without a word.
        """
        from upt_lightning.data.generate import describe_differences, stale_settings

        differences = stale_settings(self.path, self.hparams.generate, **(self.hparams.generate_options or {}))
        if differences:
            raise DataError(
                f"data file {self.path} was generated with other settings than data.generate and "
                f"data.generate_options ask for ({describe_differences(differences)}); delete the file to "
                "have it generated again with the requested settings, or point data.path at another file"
            )

    def setup(self, stage: str | None = None) -> None:
        """Open the file, split trajectories, compute train statistics and build the datasets."""
        if self.source is not None:
            return
        if not self.path.exists():
            raise DataFileNotFoundError(
                f"data file {self.path} does not exist; call prepare_data() (with generate "
                "set) first"
            )
        source = open_source(self.path, self.hparams.layout)
        self._check_kind(source)
        hp = self.hparams
        self.train_trajectories, self.val_trajectories, self.test_trajectories = split_trajectories(
            source.num_trajectories, self.split, hp.split_seed
        )
        limit = hp.get("max_train_trajectories")
        if limit is not None:
            if limit > len(self.train_trajectories):
                source.close()
                raise DataError(
                    f"max_train_trajectories={limit} exceeds the {len(self.train_trajectories)} training trajectories "
                    f"of {self.path} (split {list(self.split)}); lower it, or generate more trajectories"
                )
            # The first ones of the split: validation and test stay the same whatever the limit.
            self.train_trajectories = self.train_trajectories[:limit]
        windows = dict(stride=hp.window_stride, frame_stride=hp.frame_stride)
        self.train_set = TrajectoryWindows(
            source, self.train_trajectories, hp.train_horizon, **windows
        )
        self.eval_sets = {
            name: [
                TrajectoryWindows(source, ids, 1, **windows),
                rollout_windows(source, ids, hp.rollout_horizon, hp.frame_stride, hp.rollout_starts),
            ]
            for name, ids in (("val", self.val_trajectories), ("test", self.test_trajectories))
        }
        train = self.train_trajectories
        picked = min(hp.max_stat_trajectories, len(train))
        # Evenly spaced over the train ids so a sorted file (e.g. a parameter sweep) is covered.
        self._stats = compute_stats(
            source, [train[i * len(train) // picked] for i in range(picked)]
        )
        if hp.period is not None:
            self._stats = periodic_stats(self._stats, hp.period, self.path)
            if source.grid_shape is not None:
                warn_on_grid_period(hp.period, source.cached_coords(train[0]), source.grid_shape, self.path)
        times = source.times(train[0])
        self._dt = float(times[hp.frame_stride] - times[0])
        # Workers fork from here; closing keeps the parent's handle out of their address space.
        source.close()
        self.source = source

    def teardown(self, stage: str | None = None) -> None:
        if self.source is not None:
            self.source.close()

    def _check_kind(self, source: TrajectorySource) -> None:
        if self.is_mesh and source.grid_shape is not None:
            raise DataError(
                f"{self.path} is a grid file (layout {source.layout!r}); use GridDataModule"
            )
        if not self.is_mesh and source.grid_shape is None:
            raise DataError(
                f"{self.path} is a mesh file (layout {source.layout!r}); use MeshDataModule"
            )

    def _loaded(self) -> TrajectorySource:
        if self.source is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run; call setup() first")
        return self.source

    @property
    def field_spec(self) -> dict[str, int]:
        return self._loaded().field_spec

    @property
    def field_names(self) -> list[str]:
        return self._loaded().field_names

    @property
    def num_channels(self) -> int:
        return self._loaded().num_channels

    @property
    def grid_shape(self) -> tuple[int, ...] | None:
        return self._loaded().grid_shape

    @property
    def coord_dim(self) -> int:
        return self._loaded().coord_dim

    @property
    def period(self) -> tuple[float, ...] | None:
        """The domain's period per axis in the file's units (``coord_dim`` entries), None when not periodic."""
        if self.hparams.period is None:
            return None
        values = list(self.hparams.period)
        return tuple(values * self.coord_dim if len(values) == 1 else values)

    @property
    def rollout_starts(self) -> list[int]:
        """The start frames of the rollout windows (``data.rollout_starts``), sorted."""
        return list(self.hparams.rollout_starts)

    @property
    def dt(self) -> float:
        """Time between consecutive frames of a window (file spacing times ``frame_stride``)."""
        self._loaded()
        return self._dt

    @property
    def stats(self) -> dict[str, torch.Tensor]:
        """Train-split ``field_mean``, ``field_std`` (C,) and ``coord_min``, ``coord_max`` (d,)."""
        self._loaded()
        return {key: value.clone() for key, value in self._stats.items()}

    def train_dataloader(self) -> DataLoader:
        self._loaded()
        if self.latent_cache is not None:
            return self._loader(self.latent_cache, shuffle=True, collate_fn=self.latent_cache.collate_fn)
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        self._loaded()
        return [self._loader(dataset, shuffle=False) for dataset in self.eval_sets["val"]]

    def test_dataloader(self) -> list[DataLoader]:
        self._loaded()
        return [self._loader(dataset, shuffle=False) for dataset in self.eval_sets["test"]]

    def _frame_weights(self) -> torch.Tensor:
        """``(len(train_set),)`` float64 weights ``(n + 1) ** -frame_weight_power`` of the training windows."""
        windows = self.train_set
        first = torch.tensor([windows.window(i)[1] for i in range(len(windows))], dtype=torch.float64)
        return (first / windows.frame_stride + 1.0) ** -float(self.hparams.frame_weight_power)

    def eval_loader(self, dataset: Dataset) -> DataLoader:
        """A loader over another evaluation set of windows (a finer copy of the test split, say), made
        like the test loaders: in order, the same batches, and the same shards under DDP."""
        return self._loader(dataset, shuffle=False)

    def _loader(self, dataset: Dataset, shuffle: bool, collate_fn=None) -> DataLoader:
        workers = resolve_num_workers(self.hparams.num_workers, self._processes_per_node())
        if shuffle:
            # The shuffle is the loader's only draw from torch's global generator: one seed when each
            # epoch's iteration starts (RandomSampler without a generator). The workers' base seed
            # comes from the loader's own generator instead (below), so a loader whose persistent
            # workers live on from epoch to epoch draws as much as one started afresh by a resumed
            # run (with the global RNG state restored, see rng_state.py), whatever num_workers.
            sampler = RandomSampler(dataset)
            if self.hparams.frame_weight_power > 0:
                sampler = WeightedRandomSampler(self._frame_weights(), len(dataset), replacement=True)
        else:
            # Evaluation under DDP: equal shards with marked padding, so the synced metrics count every
            # window once (Lightning's own sampler would repeat windows).
            dataset, sampler = even_eval_shards(dataset)
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self._pin_memory(),
            collate_fn=collate_fn or (collate_mesh_windows if self.is_mesh else collate_windows),
            generator=worker_seed_generator(),
        )


def check_period(period) -> list[float] | None:
    """``period`` as a list of positive finite floats (one, or one per axis), or None; a clear error otherwise."""
    if period is None:
        return None
    values = [period] if isinstance(period, (int, float)) else list(period)
    if not values or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values
    ):
        raise ValueError(
            f"data.period={period!r} must be a positive number (the same period on every axis), a list of "
            "them (one per axis), or null for a domain that is not periodic"
        )
    return [float(v) for v in values]


def periodic_stats(stats: dict[str, torch.Tensor], period: Sequence[float], path) -> dict[str, torch.Tensor]:
    """``stats`` whose ``coord_min``, ``coord_max`` are one period apart: the normaliser maps it onto [0, 1).

    Raises :class:`DataError` when the period is given for the wrong number of axes or is not longer
    than the points' own extent (points a period apart would be the same point).
    """
    low, high = stats["coord_min"], stats["coord_max"]
    if len(period) not in (1, low.numel()):
        raise DataError(
            f"data.period has {len(period)} entries but {path} has {low.numel()}-D points; give one period "
            f"for every axis or {low.numel()} of them"
        )
    span = torch.as_tensor(period, dtype=low.dtype).expand_as(low)
    extent = high - low
    if bool((extent >= span).any()):
        raise DataError(
            f"data.period={list(period)} is not longer than the points' extent {extent.tolist()} in {path}: "
            "points one period apart would coincide. Give the domain's full period (e.g. 1.0 for [0, 1) with "
            "the last grid point at 1 - h), or period=null if the domain is not periodic"
        )
    # The period starts half the gap (span - extent) before the first point: on a grid of n points the
    # points land at (i + 0.5) / n, the centres of n equal cells, as the patch centres of GridEncoder do.
    start = low - 0.5 * (span - extent)
    return {**stats, "coord_min": start, "coord_max": start + span}


def check_rollout_starts(starts) -> list[int]:
    """``data.rollout_starts`` as a sorted list of distinct frame numbers >= 0 (an int is one start)."""
    values = [starts] if isinstance(starts, int) else list(starts or [])
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise ValueError(f"rollout_starts must be frame numbers >= 0, e.g. [0, 5, 10], got {starts!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"rollout_starts lists a frame twice: {values}")
    return sorted(values)


def rollout_windows(source: TrajectorySource, trajectories: Sequence[int], horizon: int, frame_stride: int,
                    starts: Sequence[int]) -> Dataset:
    """One rollout window of ``horizon`` steps per trajectory and start frame, ordered by start.

    Later starts test a model where the flow has changed (a decaying flow is smooth late); every trajectory
    contributes one window per start, so a mean over the windows is the mean over starts of the per-start
    means. Items carry their start as ``t0``, by which the evaluation also reports each start apart.
    """
    windows = [TrajectoryWindows(source, trajectories, horizon, 1, frame_stride, start, 1) for start in starts]
    return windows[0] if len(windows) == 1 else ConcatDataset(windows)


def grid_axes(coords: torch.Tensor, grid_shape: Sequence[int]) -> list[torch.Tensor]:
    """Each axis's coordinates, from the row-major grid points ``coords`` (N, d) of ``grid_shape``."""
    grid = coords.reshape(*grid_shape, len(grid_shape))
    dims = len(grid_shape)
    return [grid[(0,) * axis + (slice(None),) + (0,) * (dims - 1 - axis)][:, axis] for axis in range(dims)]


def warn_on_grid_period(period: Sequence[float], coords: torch.Tensor, grid_shape: Sequence[int], path) -> None:
    """Log a warning when ``data.period`` is not what a regular grid axis implies: n points ``dx`` apart.

    A periodic grid of n cells repeats after n * dx; another period puts the wrapped neighbours of the
    boundary points at a wrong distance (the decoder's locality bias and Fourier features), which trains
    without any error. Irregular axes imply no period and are not checked.
    """
    periods = list(period) * len(grid_shape) if len(period) == 1 else list(period)
    for name, axis, given in zip("xyz", grid_axes(coords.double(), grid_shape), periods):
        if len(axis) < 2:
            continue
        dx = float(axis[-1] - axis[0]) / (len(axis) - 1)
        if float((axis.diff() - dx).abs().max()) > 1e-3 * abs(dx):
            continue
        implied = len(axis) * abs(dx)
        if abs(given - implied) > 1e-3 * given:
            log.warning(
                "data.period=%s does not fit the grid of %s: its %s axis has %d points %.6g apart, a period of "
                "%.6g, not %.6g; set data.period to the domain's period (%.6g here, or one value per axis), or "
                "null if the domain is not periodic",
                period if len(period) > 1 else period[0], path, name, len(axis), abs(dx), implied, given, implied,
            )


def worker_seed_generator() -> torch.Generator:
    """The generator a DataLoader draws its workers' base seed from (once per iterator it starts).

    Without one the base seed is drawn from torch's global generator, but only when an iterator
    starts, not when persistent workers are reused for the next epoch: an uninterrupted run and
    one resumed from a checkpoint would then consume the global stream differently and shuffle
    later epochs differently. Seeded from ``PL_GLOBAL_SEED`` (``seed_everything``), like
    Lightning's DistributedSampler. The datasets draw no random numbers, so the batches do not
    depend on the workers' seeds.
    """
    return torch.Generator().manual_seed(int(os.environ.get("PL_GLOBAL_SEED", 0)))


class GridDataModule(TrajectoryDataModule):
    """Grid trajectories (PDEBench 1D, per-sample groups, CFD); batches carry no mask."""


class MeshDataModule(TrajectoryDataModule):
    """Mesh trajectories (``upt_mesh`` and ``shared_mesh`` layouts); batches are padded and carry ``mask`` (B, N)."""

    is_mesh = True
