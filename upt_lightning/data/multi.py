"""One DataModule over several trajectory files, for one model trained on several PDEs.

Each dataset stays a :class:`~upt_lightning.data.datamodules.TrajectoryDataModule` of its own (its own
trajectory split, train-split statistics, field spec, grid and dt). Training reads one loader whose
batches each come from one dataset (see data/dataset_batches.py); evaluation reads each dataset's own
loaders. Every batch carries ``dataset`` (B,) int64, the dataset's index in :attr:`MultiDataModule.names`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from upt_lightning.data.collate import collate_mesh_windows, collate_windows
from upt_lightning.data.datamodules import (
    GridDataModule,
    LoaderSettings,
    MeshDataModule,
    TrajectoryDataModule,
    worker_seed_generator,
)
from upt_lightning.data.dataset_batches import (
    ConcatWindows,
    DatasetBatchSampler,
    OneDatasetCollate,
    WithDatasetIndex,
)
from upt_lightning.data.workers import check_num_workers, resolve_num_workers
from upt_lightning.errors import ConfigError, DataError, is_user_error

EVAL_LOADER_KINDS = ("one_step", "rollout")
"""The loaders of each dataset in ``val_dataloader()``/``test_dataloader()``, in order."""


class MultiDataModule(LoaderSettings, L.LightningDataModule):
    """Several datasets: per-dataset splits and statistics, mixed training batches, per-dataset evaluation.

    ``datasets`` maps a name (non-empty, without "/": it becomes the metric prefix ``test/<name>/...``)
    to a built TrajectoryDataModule or to the keyword arguments of one: GridDataModule, or
    MeshDataModule with ``kind: mesh`` (a ``_target_`` key, as Hydra leaves it, is dropped; without
    ``kind`` one naming MeshDataModule selects it). ``batch_size``, ``num_workers`` and ``pin_memory``
    replace the datasets' own, so every loader runs alike. ``frame_weight_power`` exists so that an
    experiment written for one dataset composes; anything but 0 is refused (windows are drawn uniformly).

    Training: one loader, every batch from one dataset, drawn per batch with probability proportional
    to its number of training windows (``mixing="proportional"``) or to ``mixing[name]``. An epoch is
    ``batches_per_epoch`` batches, by default ``sum(ceil(windows / (batch_size * world_size)))``. The
    batches depend only on ``seed`` and the epoch (see :class:`DatasetBatchSampler`), and under DDP the
    k-th batch of every rank comes from the same dataset.

    Evaluation: ``val_dataloader()``/``test_dataloader()`` return ``[d0 one-step, d0 rollout, d1 one-step,
    ...]``, each dataset's own loaders (DDP shards as in data/even_shards.py); :meth:`eval_loader_names`
    names them. Batches hold the keys of the dataset's collate (``collate_windows``, or
    ``collate_mesh_windows`` for a mesh dataset) plus ``dataset``.

    No latent cache (``LatentCacheCallback``): the cache encodes one train set, so setting
    ``latent_cache`` raises ConfigError.
    """

    def __init__(
        self,
        datasets: Mapping[str, Mapping | TrajectoryDataModule],
        batch_size: int = 16,
        mixing: str | Mapping[str, float] = "proportional",
        num_workers: int | str = 0,
        seed: int = 0,
        batches_per_epoch: int | None = None,
        pin_memory: bool | str = "auto",
        frame_weight_power: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(datasets, Mapping) or not datasets:
            raise ConfigError(
                "data.datasets is empty: a MultiDataModule needs at least one dataset, "
                "given as datasets: {name: {path: ..., ...}}"
            )
        self.names = [_check_name(name) for name in datasets]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"data.batch_size={batch_size!r} must be an integer >= 1")
        if batches_per_epoch is not None and (
            isinstance(batches_per_epoch, bool) or not isinstance(batches_per_epoch, int) or batches_per_epoch < 1
        ):
            raise ConfigError(
                f"data.batches_per_epoch={batches_per_epoch!r} must be an integer >= 1, or null for about "
                "one pass over every dataset"
            )
        try:
            check_num_workers(num_workers)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if pin_memory not in (True, False, "auto"):
            raise ConfigError(
                f"data.pin_memory={pin_memory!r} must be true, false or 'auto' (pin when training on CUDA)"
            )
        self.weights = _check_mixing(mixing, self.names)
        shared = {"batch_size": batch_size, "num_workers": num_workers, "pin_memory": pin_memory}
        self.children: dict[str, TrajectoryDataModule] = {
            name: _child(name, spec, shared) for name, spec in datasets.items()
        }
        # Its own sampler draws every dataset's windows uniformly: a frame weight, here or on a dataset, would
        # be silently ignored.
        weighted = ["data.frame_weight_power"] if frame_weight_power else []
        weighted += [f"data.datasets.{name}.frame_weight_power" for name, child in self.children.items()
                     if child.hparams.frame_weight_power > 0]
        if weighted:
            raise ConfigError(
                f"{weighted[0]} is set, but with several datasets the batches come from MultiDataModule's own "
                "sampler, which draws windows uniformly; set it to 0"
            )
        self.save_hyperparameters(ignore=["datasets"])
        # Plain values only, so checkpoints holding these hyperparameters load with weights_only=True; with
        # each dataset's kind, MultiDataModule(**hparams) rebuilds the same datasets.
        self.hparams["mixing"] = mixing if isinstance(mixing, str) else {k: float(v) for k, v in mixing.items()}
        self.hparams["datasets"] = {
            name: _plain({**child.hparams, "kind": "mesh" if child.is_mesh else "grid"})
            for name, child in self.children.items()
        }
        self.train_set: ConcatWindows | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Each dataset's ``prepare_data`` (creates a missing file when its ``generate`` names one)."""
        for name, child in self.children.items():
            with _named_errors(name):
                child.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Each dataset's ``setup``; checks that all have points of one dimension; builds the train view."""
        for name, child in self.children.items():
            with _named_errors(name):
                child.setup(stage)
        first = self.names[0]
        for name in self.names[1:]:
            a, b = self.children[first], self.children[name]
            if a.coord_dim != b.coord_dim:
                raise DataError(
                    f"datasets {first!r} ({a.path}) and {name!r} ({b.path}) have points of different "
                    f"dimension ({a.coord_dim}D and {b.coord_dim}D); one model reads points of one "
                    "dimension, so train only datasets of equal coord_dim together"
                )
        if self.train_set is None:
            self.train_set = ConcatWindows([self.children[name].train_set for name in self.names])

    def teardown(self, stage: str | None = None) -> None:
        for child in self.children.values():
            child.teardown(stage)

    def _loaded(self) -> None:
        if self.train_set is None:
            raise RuntimeError("MultiDataModule.setup() has not run; call setup() first")

    # -- what the datasets hold -------------------------------------------------------------------------

    @property
    def stats_by_dataset(self) -> dict[str, dict[str, torch.Tensor]]:
        """{name: that dataset's train-split ``field_mean``, ``field_std`` (C,), ``coord_min``, ``coord_max`` (d,)}."""
        self._loaded()
        return {name: self.children[name].stats for name in self.names}

    @property
    def field_spec_by_dataset(self) -> dict[str, dict[str, int]]:
        """{name: ordered {field name: channels}}."""
        self._loaded()
        return {name: self.children[name].field_spec for name in self.names}

    @property
    def grid_shape_by_dataset(self) -> dict[str, tuple[int, ...] | None]:
        """{name: grid shape, None for a mesh dataset}."""
        self._loaded()
        return {name: self.children[name].grid_shape for name in self.names}

    @property
    def dt_by_dataset(self) -> dict[str, float]:
        """{name: time between consecutive frames of a window}."""
        self._loaded()
        return {name: self.children[name].dt for name in self.names}

    @property
    def coord_dim(self) -> int:
        """Dimension of the points, the same for every dataset (checked in ``setup``)."""
        self._loaded()
        return self.children[self.names[0]].coord_dim

    @property
    def rollout_starts(self) -> list[int]:
        """The start frames of the rollout windows, the same for every dataset (``data.rollout_starts``)."""
        return self.children[self.names[0]].rollout_starts

    def describe(self) -> dict[str, dict]:
        """{name: path, kind, field_spec, grid_shape, coord_dim, dt, trajectories per split}, JSON-able,
        in config order: what a checkpoint records about its data."""
        self._loaded()
        out = {}
        for name in self.names:
            child = self.children[name]
            shape = child.grid_shape
            out[name] = {
                "path": str(child.path),
                "kind": "mesh" if child.is_mesh else "grid",
                "field_spec": {field: int(n) for field, n in child.field_spec.items()},
                "grid_shape": None if shape is None else [int(n) for n in shape],
                "coord_dim": int(child.coord_dim),
                "dt": float(child.dt),
                "trajectories": {
                    "train": len(child.train_trajectories),
                    "val": len(child.val_trajectories),
                    "test": len(child.test_trajectories),
                },
            }
        return out

    # -- loaders --------------------------------------------------------------------------------------

    def train_sampler(self) -> DatasetBatchSampler:
        """The training loader's sampler, with world size and rank of the running process group."""
        self._loaded()
        return DatasetBatchSampler(
            [len(self.children[name].train_set) for name in self.names],
            self.hparams.batch_size,
            weights=self.weights,
            seed=self.hparams.seed,
            num_batches=self.hparams.batches_per_epoch,
        )

    def train_dataloader(self) -> DataLoader:
        """Batches from one dataset each: the dataset's collate keys plus ``dataset`` (B,) int64."""
        self._loaded()
        workers = resolve_num_workers(self.hparams.num_workers, self._processes_per_node())
        collates = [collate_mesh_windows if self.children[n].is_mesh else collate_windows for n in self.names]
        # batch_size=None: the sampler yields whole batches of indices, which reach the view whole
        # (see data/dataset_batches.py for why this is not a batch_sampler under Lightning).
        return DataLoader(
            self.train_set,
            batch_size=None,
            sampler=self.train_sampler(),
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self._pin_memory(),
            collate_fn=OneDatasetCollate(collates),
            generator=worker_seed_generator(),
        )

    def val_dataloader(self) -> list[DataLoader]:
        """``[d0 one-step, d0 rollout, d1 one-step, d1 rollout, ...]``, as :meth:`eval_loader_names` says."""
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        """``[d0 one-step, d0 rollout, d1 one-step, d1 rollout, ...]``, as :meth:`eval_loader_names` says."""
        return self._eval_loaders("test")

    def eval_loader_names(self, split: str = "val") -> list[tuple[str, str]]:
        """``(dataset name, "one_step" | "rollout")`` of each loader of ``val_dataloader()`` or
        ``test_dataloader()`` (``split`` "val" or "test"), in their order."""
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        return [(name, kind) for name in self.names for kind in EVAL_LOADER_KINDS]

    def eval_loader(self, dataset_name: str, dataset: Dataset) -> DataLoader:
        """A loader over another evaluation set of windows of dataset ``dataset_name``, made like its test
        loaders (in order, the same shards under DDP), with ``dataset`` in every batch."""
        index = self._index(dataset_name)
        child = self._attached(dataset_name)
        return _tagged(child.eval_loader(dataset), index)

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        self._loaded()
        loaders = []
        for index, name in enumerate(self.names):
            child = self._attached(name)
            own = child.val_dataloader() if split == "val" else child.test_dataloader()
            if len(own) != len(EVAL_LOADER_KINDS):
                raise RuntimeError(
                    f"dataset {name!r} gave {len(own)} {split} loaders, expected {len(EVAL_LOADER_KINDS)} "
                    f"({', '.join(EVAL_LOADER_KINDS)})"
                )
            loaders.extend(_tagged(loader, index) for loader in own)
        return loaders

    def _index(self, name: str) -> int:
        if name not in self.children:
            raise ValueError(f"no dataset named {name!r}; the datasets are {self.names}")
        return self.names.index(name)

    def _attached(self, name: str) -> TrajectoryDataModule:
        """Dataset ``name``'s module, told this module's trainer (its pin_memory and worker count read it)."""
        child = self.children[name]
        child.trainer = self.trainer
        return child

    # -- no latent cache ------------------------------------------------------------------------------

    @property
    def latent_cache(self):
        # AttributeError, so hasattr() is False and LatentCacheCallback reports that it needs a
        # GridDataModule or MeshDataModule before it encodes anything.
        raise AttributeError("MultiDataModule has no latent cache")

    @latent_cache.setter
    def latent_cache(self, value) -> None:
        if value is not None:
            raise ConfigError(
                "MultiDataModule does not support a latent cache (the cache encodes one dataset's train "
                "windows); set stage2.latent_cache=false"
            )


def _check_name(name) -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(
            f"dataset name {name!r} must be a non-empty string without '/': it becomes the metric "
            "prefix test/<name>/...; rename the entry of data.datasets"
        )
    return name


def _check_mixing(mixing, names: Sequence[str]) -> list[float] | None:
    """Per-dataset weights in ``names`` order, or None for "proportional" (to the training windows)."""
    if isinstance(mixing, str):
        if mixing != "proportional":
            raise ConfigError(
                f"data.mixing={mixing!r} must be 'proportional' (to the training windows) or a mapping "
                f"{{dataset name: weight}} over the datasets {list(names)}"
            )
        return None
    if not isinstance(mixing, Mapping):
        raise ConfigError(f"data.mixing={mixing!r} must be 'proportional' or a mapping {{dataset name: weight}}")
    unknown = [key for key in mixing if key not in names]
    missing = [name for name in names if name not in mixing]
    if unknown or missing:
        raise ConfigError(
            f"data.mixing must give a weight to exactly the datasets {list(names)}: "
            + "; ".join(
                part
                for part in (
                    f"unknown dataset(s) {unknown}" if unknown else "",
                    f"no weight for {missing}" if missing else "",
                )
                if part
            )
        )
    weights = []
    for name in names:
        weight = mixing[name]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise ConfigError(
                f"data.mixing.{name}={weight!r} must be a finite number > 0 (a relative batch frequency); "
                "leave a dataset out of data.datasets to not train on it"
            )
        weights.append(float(weight))
    return weights


def _child(name: str, spec, shared: dict) -> TrajectoryDataModule:
    """Dataset ``name``'s module, built from ``spec`` when a mapping, with the ``shared`` loader settings."""
    if isinstance(spec, TrajectoryDataModule):
        # Its loaders read these from hparams on every call.
        spec.hparams.update(shared)
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"data.datasets.{name} must be a GridDataModule/MeshDataModule or a mapping of its arguments, "
            f"got {type(spec).__name__}"
        )
    kwargs = dict(spec)
    target = str(kwargs.pop("_target_", ""))
    kind = kwargs.pop("kind", "mesh" if target.endswith("MeshDataModule") else "grid")
    classes = {"grid": GridDataModule, "mesh": MeshDataModule}
    if kind not in classes:
        raise ConfigError(f"data.datasets.{name}.kind={kind!r} must be 'grid' or 'mesh'")
    try:
        return classes[kind](**{**kwargs, **shared})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"data.datasets.{name}: {error}") from error


@contextmanager
def _named_errors(name: str) -> Iterator[None]:
    """Errors of dataset ``name``'s module name its entry ``data.datasets.<name>``: a child's message names
    its file and keys, but not which of several datasets it belongs to.

    A user error is raised again as its own type (so it is still reported without a traceback, and caught
    as before) with the entry in front of its message; any other error is a bug and keeps its traceback,
    with the entry added as a note.
    """
    try:
        yield
    except Exception as error:
        if not is_user_error(error):
            error.add_note(f"raised for data.datasets.{name}")
            raise
        raise type(error)(f"data.datasets.{name}: {error}") from error


def _tagged(loader: DataLoader, index: int) -> DataLoader:
    """``loader`` whose batches also carry ``dataset`` = ``index``. Its collate_fn is read when an iterator
    starts, so replacing it on the built loader is enough (and keeps its sampler and shards)."""
    loader.collate_fn = WithDatasetIndex(loader.collate_fn, index)
    return loader


def _plain(value):
    """``value`` with mappings as dicts and sequences (OmegaConf's included) as lists, for checkpoints."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(item) for item in value]
    return value
