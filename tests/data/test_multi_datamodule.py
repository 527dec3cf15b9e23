"""MultiDataModule: per-dataset splits and statistics, one-dataset training batches mixed by weight,
permutation cycling, determinism, DDP ranks in step, per-dataset evaluation loaders, bad configs."""

from __future__ import annotations

import json
from collections import Counter

import lightning as L
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch

from upt_lightning.data import MultiDataModule
from upt_lightning.data.datamodules import GridDataModule
from upt_lightning.data.dataset_batches import DatasetBatchSampler
from upt_lightning.data.writers import MeshWriter, PDEBench1DWriter, PDEBench2DWriter
from upt_lightning.errors import ConfigError, DataError, DataFileNotFoundError, is_user_error

STEPS = 5  # frames per trajectory: 4 next-step windows each


def write_grid(path, trajectories, size, field_names, seed):
    """A PDEBench 2D file of ``trajectories`` x STEPS frames on a ``size`` x ``size`` grid; each trajectory
    has its own offset and scale, so statistics depend on which trajectories are used."""
    rng = np.random.default_rng(seed)
    channels = len(field_names)
    offsets = np.arange(trajectories, dtype=np.float32)[:, None, None, None, None] + 10 * seed
    data = offsets + (1 + offsets) * rng.normal(size=(trajectories, STEPS, size, size, channels))
    axis = np.linspace(0, 1, size)
    with PDEBench2DWriter(path, num=trajectories, x=axis, y=axis, t=np.arange(STEPS) * 0.1 * (1 + seed),
                          field_names=field_names) as writer:
        writer.append(data)
    return data.astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``flow``: 16x16 (u, v), 10 trajectories (8 train: 32 windows); ``vort``: 8x8 (w), 20 trajectories
    (16 train: 64 windows)."""
    root = tmp_path_factory.mktemp("multi")
    flow = write_grid(root / "flow.h5", 10, 16, ["u", "v"], seed=0)
    vort = write_grid(root / "vort.h5", 20, 8, ["w"], seed=1)
    return {"flow": (root / "flow.h5", flow), "vort": (root / "vort.h5", vort)}


def make(files, **kwargs):
    kwargs.setdefault("batch_size", 4)
    datasets = kwargs.pop("datasets", None) or {
        name: {"path": str(path), "rollout_horizon": 3} for name, (path, _) in files.items()
    }
    dm = MultiDataModule(datasets, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def rows(batch):
    """(dataset, traj, t0) of every row of a batch."""
    return list(zip(batch["dataset"].tolist(), batch["traj"].tolist(), batch["t0"].tolist()))


# -- datasets stay separate ----------------------------------------------------------------------------


def test_each_dataset_keeps_its_split_stats_and_shape(files):
    dm = make(files, datasets={
        "flow": {"_target_": "upt_lightning.data.GridDataModule", "path": str(files["flow"][0]),
                 "batch_size": 2, "rollout_horizon": 3},
        "vort": GridDataModule(files["vort"][0], batch_size=7, rollout_horizon=3),
    })
    assert dm.names == ["flow", "vort"] and list(dm.children) == ["flow", "vort"]
    assert all(child.hparams.batch_size == 4 for child in dm.children.values())  # the shared batch size
    for name, child in dm.children.items():
        splits = [child.train_trajectories, child.val_trajectories, child.test_trajectories]
        assert sorted(sum(splits, [])) == list(range(len(files[name][1])))  # disjoint and complete
        alone = GridDataModule(files[name][0], rollout_horizon=3)
        alone.setup("fit")
        assert alone.val_trajectories == child.val_trajectories
        for key, value in alone.stats.items():
            torch.testing.assert_close(dm.stats_by_dataset[name][key], value, rtol=0, atol=0)
    assert dm.stats_by_dataset["flow"]["field_mean"].shape == (2,)
    assert dm.stats_by_dataset["vort"]["field_mean"].shape == (1,)
    assert abs(dm.stats_by_dataset["flow"]["field_mean"][0] - dm.stats_by_dataset["vort"]["field_mean"][0]) > 1
    assert dm.field_spec_by_dataset == {"flow": {"u": 1, "v": 1}, "vort": {"w": 1}}
    assert dm.grid_shape_by_dataset == {"flow": (16, 16), "vort": (8, 8)}
    assert dm.dt_by_dataset == pytest.approx({"flow": 0.1, "vort": 0.2})
    assert dm.coord_dim == 2
    described = json.loads(json.dumps(dm.describe()))
    assert described["vort"] == {
        "path": str(files["vort"][0]), "kind": "grid", "field_spec": {"w": 1}, "grid_shape": [8, 8],
        "coord_dim": 2, "dt": pytest.approx(0.2), "trajectories": {"train": 16, "val": 2, "test": 2},
    }
    json.dumps(dict(dm.hparams))  # plain values for the checkpoint, from which the same datasets are rebuilt
    again = MultiDataModule(**dm.hparams)
    assert again.names == dm.names and again.hparams == dm.hparams


# -- training batches ----------------------------------------------------------------------------------


def test_training_batches_come_from_one_dataset_each_with_its_windows(files):
    dm = make(files)
    loader = dm.train_dataloader()
    assert len(loader) == 32 // 4 + 64 // 4
    seen = Counter()
    for batch in loader:
        index = batch["dataset"][0].item()
        name = dm.names[index]
        path, data = files[name]
        assert batch["dataset"].dtype == torch.int64 and batch["dataset"].tolist() == [index] * 4
        size, channels = (16, 2) if name == "flow" else (8, 1)
        assert batch["fields"].shape == (4, size * size, channels)
        assert batch["targets"].shape == (4, 1, size * size, channels) and "mask" not in batch
        for row, (_, traj, t0) in enumerate(rows(batch)):
            assert traj in dm.children[name].train_trajectories
            torch.testing.assert_close(batch["fields"][row],
                                       torch.from_numpy(data[traj, t0]).reshape(-1, channels), rtol=0, atol=0)
        seen[name] += 1
    assert set(seen) == {"flow", "vort"}


def test_a_mesh_dataset_beside_a_grid_one_keeps_its_padded_batches(files, tmp_path):
    rng = np.random.default_rng(2)
    with MeshWriter(tmp_path / "mesh.h5", num=6, field_names=["p"]) as writer:
        for count in (12, 9, 15, 10, 11, 13):
            writer.append(rng.uniform(size=(count, 2)), rng.normal(size=(STEPS, count, 1)), np.arange(STEPS) * 0.5)
    dm = make(files, datasets={"flow": {"path": str(files["flow"][0]), "rollout_horizon": 3},
                               "mesh": {"path": str(tmp_path / "mesh.h5"), "kind": "mesh", "rollout_horizon": 3}})
    assert dm.grid_shape_by_dataset == {"flow": (16, 16), "mesh": None}
    seen = set()
    for batch in dm.train_dataloader():
        mesh = batch["dataset"][0].item() == 1
        assert ("mask" in batch) == mesh and batch["fields"].shape[-1] == (1 if mesh else 2)
        seen.add(mesh)
    assert seen == {False, True}
    rollout = next(iter(dm.val_dataloader()[3]))
    assert rollout["dataset"].tolist() == [1] * len(rollout["traj"]) and "mask" in rollout


def test_two_workers_give_the_batches_of_the_main_process(files):
    serial = [rows(b) for b in make(files).train_dataloader()]
    parallel = [rows(b) for b in make(files, num_workers=2).train_dataloader()]
    assert parallel == serial


@pytest.mark.parametrize("mixing, expected", [("proportional", 1 / 3), ({"flow": 3, "vort": 1.0}, 3 / 4)])
def test_dataset_frequencies_follow_the_mixing_weights(files, mixing, expected):
    dm = make(files, mixing=mixing, batches_per_epoch=4000)
    sampler = dm.train_sampler()
    assert len(sampler) == 4000
    flow = sum(batch[0] < 32 for batch in sampler) / 4000  # flow holds global indices 0..31
    # Binomial std of the fraction is below 0.0075: 0.03 is four of them.
    assert flow == pytest.approx(expected, abs=0.03)


def _streams(sampler_batches, sizes, offsets):
    """Per dataset, the local indices in the order the batches took them."""
    streams = [[] for _ in sizes]
    for batch in sampler_batches:
        dataset = max(i for i, offset in enumerate(offsets) if batch[0] >= offset)
        assert all(offsets[dataset] <= i < offsets[dataset] + sizes[dataset] for i in batch)
        streams[dataset].extend(i - offsets[dataset] for i in batch)
    return streams


def _assert_passes_are_permutations(stream, size):
    passes = [stream[i : i + size] for i in range(0, len(stream) - size + 1, size)]
    assert len(passes) >= 2
    for one_pass in passes:
        assert sorted(one_pass) == list(range(size))
    assert passes[0] != passes[1]  # reshuffled


def test_every_window_is_seen_once_per_pass_before_repeats():
    sizes = [10, 7]  # not multiples of the batch size: passes end inside batches
    sampler = DatasetBatchSampler(sizes, batch_size=4, seed=3, num_batches=200, num_replicas=1, rank=0)
    for stream, size in zip(_streams(list(sampler), sizes, sampler.offsets), sizes):
        _assert_passes_are_permutations(stream, size)


def test_same_seed_and_epoch_give_the_same_batches_another_epoch_others(files):
    def batches(seed, epoch):
        loader = make(files, seed=seed).train_dataloader()
        _set_sampler_epoch(loader, epoch)  # what Lightning's fit loop calls at each epoch start
        return [rows(b) for b in loader]

    first = batches(seed=0, epoch=1)
    assert batches(seed=0, epoch=1) == first
    assert batches(seed=0, epoch=2) != first
    assert batches(seed=5, epoch=1) != first


# -- DDP -----------------------------------------------------------------------------------------------


def test_ranks_draw_the_same_datasets_and_disjoint_windows():
    sizes, batch_size = [32, 64], 4
    ranks = [DatasetBatchSampler(sizes, batch_size, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 32 // 8 + 64 // 8
    long = [DatasetBatchSampler(sizes, batch_size, seed=1, num_batches=100, num_replicas=2, rank=r)
            for r in (0, 1)]
    batches = [list(sampler) for sampler in long]
    offsets = long[0].offsets

    def dataset_of(batch):
        return int(batch[0] >= offsets[1])

    assert [dataset_of(b) for b in batches[0]] == [dataset_of(b) for b in batches[1]]
    # Rank 0's and rank 1's blocks of each batch, in turn, are one shuffled pass after another.
    merged = [index for pair in zip(*batches) for batch in pair for index in batch]
    streams = _streams([merged[i : i + batch_size] for i in range(0, len(merged), batch_size)], sizes, offsets)
    for stream, size in zip(streams, sizes):
        _assert_passes_are_permutations(stream, size)
    # The first pass over the small dataset: 4 batches of it, no window on both ranks.
    first = [[i for b in rank if dataset_of(b) == 0 for i in b][:16] for rank in batches]
    assert len(set(first[0]) | set(first[1])) == 32


def test_lightning_keeps_the_sampler_under_ddp(files):
    """Trainer(strategy="ddp", devices=2) with the default use_distributed_sampler=True leaves the
    loader alone (no processes are started: only Lightning's decision is checked)."""
    from lightning.pytorch.trainer.states import RunningStage

    dm = make(files)
    loader = dm.train_dataloader()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False)
    assert trainer._accelerator_connector.is_distributed
    connector = trainer._data_connector
    assert not connector._requires_distributed_sampler(loader)
    assert connector._prepare_dataloader(loader, shuffle=True, mode=RunningStage.TRAINING) is loader
    _set_sampler_epoch(loader, 4)
    assert loader.sampler.epoch == 4


class RowRecorder(L.Callback):
    """Saves, per rank, epoch and batch, the (dataset, traj, t0) rows a training step receives."""

    def __init__(self, out):
        self.out = out

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        torch.save(rows(batch), self.out / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}_{batch_idx}.pt")


class Scalar(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return (self.w - batch["fields"].mean()).square()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.slow
def test_two_ddp_processes_read_the_samplers_batches(files, tmp_path):
    """A real fit on 2 CPU processes (ddp_spawn, gloo, default use_distributed_sampler): each rank reads
    exactly what DatasetBatchSampler(rank=r, num_replicas=2) yields for each epoch."""
    dm = make(files, seed=7)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[RowRecorder(tmp_path)])
    trainer.fit(Scalar(), datamodule=dm)
    sizes, offsets = [32, 64], [0, 32]
    for epoch in (0, 1):
        for rank in (0, 1):
            sampler = DatasetBatchSampler(sizes, 4, seed=7, num_replicas=2, rank=rank)
            sampler.set_epoch(epoch)
            expected = []
            for batch in sampler:
                dataset = int(batch[0] >= offsets[1])
                windows = dm.children[dm.names[dataset]].train_set
                expected.append([(dataset, *windows.window(i - offsets[dataset])) for i in batch])
            got = [torch.load(tmp_path / f"rank{rank}_epoch{epoch}_{k}.pt") for k in range(len(sampler))]
            assert got == expected


# -- evaluation loaders --------------------------------------------------------------------------------


def test_eval_loaders_are_each_datasets_own_in_order(files):
    dm = make(files, batch_size=3)
    for split, loaders in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        names = dm.eval_loader_names(split)
        assert names == [("flow", "one_step"), ("flow", "rollout"), ("vort", "one_step"), ("vort", "rollout")]
        assert len(loaders) == len(names)
        for loader, (name, kind) in zip(loaders, names):
            child = dm.children[name]
            ids = child.val_trajectories if split == "val" else child.test_trajectories
            horizon = 3 if kind == "rollout" else 1
            pairs = []
            for batch in loader:
                assert batch["dataset"].tolist() == [dm.names.index(name)] * len(batch["traj"])
                assert batch["targets"].shape[1:3] == (horizon, 256 if name == "flow" else 64)
                pairs += list(zip(batch["traj"].tolist(), batch["t0"].tolist()))
            assert pairs == ([(t, s) for t in ids for s in range(4)] if kind == "one_step" else [(t, 0) for t in ids])
    extra = dm.eval_loader("vort", dm.children["vort"].eval_sets["test"][1])
    assert next(iter(extra))["dataset"].tolist() == [1, 1]


# -- bad configurations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(mixing={"flow": 1, "wind": 1}), "unknown dataset"),
        (dict(mixing={"flow": 1}), "no weight for ['vort']"),
        (dict(mixing={"flow": 1, "vort": -2}), "data.mixing.vort=-2 must be a finite number > 0"),
        (dict(mixing={"flow": 1, "vort": float("nan")}), "finite number > 0"),
        (dict(mixing="uniform"), "must be 'proportional'"),
        (dict(datasets={"a/b": {"path": "x.h5"}}), "without '/'"),
        (dict(datasets={"": {"path": "x.h5"}}), "non-empty"),
        (dict(datasets={}), "at least one dataset"),
        (dict(datasets={"a": {"path": "x.h5", "kind": "cloud"}}), "'grid' or 'mesh'"),
        (dict(datasets={"a": {"path": "x.h5", "horizon": 2}}), "data.datasets.a"),
        (dict(batches_per_epoch=0), "batches_per_epoch"),
    ],
)
def test_bad_configs_name_the_problem(files, change, message):
    kwargs = {"datasets": {name: {"path": str(path)} for name, (path, _) in files.items()}, **change}
    with pytest.raises(ConfigError) as error:
        MultiDataModule(**kwargs)
    assert message in str(error.value)


def test_datasets_of_different_point_dimension_are_refused(files, tmp_path):
    with PDEBench1DWriter(tmp_path / "line.h5", num=5, x=np.linspace(0, 1, 8), t=np.arange(STEPS) * 0.1,
                          nu=0.1) as writer:
        writer.append(np.zeros((5, STEPS, 8)))
    dm = MultiDataModule({name: {"path": str(path), "rollout_horizon": 3}
                          for name, path in (("flow", files["flow"][0]), ("line", tmp_path / "line.h5"))})
    with pytest.raises(DataError, match=r"'flow' .* and 'line' .* \(2D and 1D\)"):
        dm.setup("fit")


def test_a_datasets_errors_name_its_entry_and_keep_their_type(files, tmp_path):
    missing = MultiDataModule({"flow": {"path": str(files["flow"][0])}, "ns2d": {"path": str(tmp_path / "no.h5")}})
    with pytest.raises(DataFileNotFoundError) as error:
        missing.prepare_data()
    assert str(error.value).startswith(f"data.datasets.ns2d: data file {tmp_path / 'no.h5'} does not exist; ")
    assert is_user_error(error.value) and isinstance(error.value, FileNotFoundError)

    misfit = MultiDataModule({"flow": {"path": str(files["flow"][0]), "rollout_horizon": 3, "period": 0.5}})
    with pytest.raises(DataError, match=r"^data\.datasets\.flow: data\.period=\[0\.5\] is not longer"):
        misfit.setup("fit")


def test_a_latent_cache_is_refused(files):
    dm = MultiDataModule({"flow": {"path": str(files["flow"][0])}})
    assert not hasattr(dm, "latent_cache")  # LatentCacheCallback then says it needs a Grid/MeshDataModule
    with pytest.raises(ConfigError, match="latent cache"):
        dm.latent_cache = object()
