"""DataModules: trajectory splits, train-only statistics, raw batches, worker equivalence."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from upt_lightning.data.datamodules import GridDataModule, MeshDataModule
from upt_lightning.runtime.rng_state import collect_rng_states, set_rng_states


def write_1d(path, trajectories=10, steps=6, points=5, seed=0):
    rng = np.random.default_rng(seed)
    # A different offset and scale per trajectory, so statistics depend on which are used.
    offsets = np.arange(trajectories)[:, None, None, None]
    tensor = (offsets + (1 + offsets) * rng.normal(size=(trajectories, steps, points, 2))).astype(
        np.float32
    )
    with h5py.File(path, "w") as f:
        f["tensor"] = tensor
        f["x-coordinate"] = np.linspace(-1, 3, points)
        f["t-coordinate"] = np.arange(steps + 1) * 0.1
    return tensor


def write_mesh(path, points=(9, 4, 6, 7, 5), steps=4):
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f.attrs["layout"] = "upt_mesh"
        f.attrs["field_names"] = ["u"]
        for n, count in enumerate(points):
            group = f.create_group(f"{n:04d}")
            group["coords"] = rng.uniform(size=(count, 2)).astype(np.float32)
            group["data"] = rng.normal(size=(steps, count, 1)).astype(np.float32)
            group["t"] = np.arange(steps) * 0.5


def make(path, cls=GridDataModule, **kwargs):
    kwargs.setdefault("rollout_horizon", 3)
    dm = cls(path, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_split_is_disjoint_complete_and_seeded(tmp_path):
    write_1d(tmp_path / "a.h5")
    dm = make(tmp_path / "a.h5")
    splits = (dm.train_trajectories, dm.val_trajectories, dm.test_trajectories)
    assert [len(s) for s in splits] == [8, 1, 1]
    assert sorted(sum(splits, [])) == list(range(10))
    again = make(tmp_path / "a.h5")
    assert (
        again.val_trajectories == dm.val_trajectories
        and again.test_trajectories == dm.test_trajectories
    )
    held_out = [make(tmp_path / "a.h5", split_seed=seed) for seed in (1, 2, 3)]
    assert any(
        o.val_trajectories + o.test_trajectories != dm.val_trajectories + dm.test_trajectories
        for o in held_out
    )


def test_max_train_trajectories_keeps_the_first_of_the_split_and_leaves_val_and_test(tmp_path):
    from upt_lightning.errors import DataError

    write_1d(tmp_path / "a.h5", trajectories=12)
    full = make(tmp_path / "a.h5", split=[0.5, 0.25, 0.25])
    few = make(tmp_path / "a.h5", split=[0.5, 0.25, 0.25], max_train_trajectories=2)
    assert len(full.train_trajectories) == 6 and few.train_trajectories == full.train_trajectories[:2]
    assert (few.val_trajectories, few.test_trajectories) == (full.val_trajectories, full.test_trajectories)
    assert len(few.train_set) == len(full.train_set) // 3
    assert not torch.equal(few.stats["field_mean"], full.stats["field_mean"])  # statistics of the 2 only
    with pytest.raises(DataError, match="max_train_trajectories=7 exceeds the 6 training trajectories"):
        make(tmp_path / "a.h5", split=[0.5, 0.25, 0.25], max_train_trajectories=7)
    with pytest.raises(ValueError, match="max_train_trajectories=0 must be an integer >= 1"):
        GridDataModule(tmp_path / "a.h5", max_train_trajectories=0)


def test_stats_are_train_only_mean_and_std(tmp_path):
    path = tmp_path / "a.h5"
    tensor = write_1d(path)
    dm = make(path)
    train = tensor[dm.train_trajectories].reshape(-1, 2).astype(np.float64)
    stats = dm.stats
    torch.testing.assert_close(stats["field_mean"], torch.from_numpy(train.mean(0)).float())
    torch.testing.assert_close(stats["field_std"], torch.from_numpy(train.std(0)).float())
    torch.testing.assert_close(stats["coord_min"], torch.tensor([-1.0]))
    torch.testing.assert_close(stats["coord_max"], torch.tensor([3.0]))
    assert all(v.dtype == torch.float32 for v in stats.values())
    with h5py.File(path, "r+") as f:
        f["tensor"][dm.val_trajectories[0]] = 1e4
        f["tensor"][dm.test_trajectories[0]] = -1e4
    moved = make(path).stats
    for key in stats:
        torch.testing.assert_close(moved[key], stats[key], rtol=0, atol=0)
    with h5py.File(path, "r+") as f:
        f["tensor"][dm.train_trajectories[0]] = 1e4
    assert not torch.allclose(make(path).stats["field_mean"], stats["field_mean"])


def test_constant_channel_std_is_floored(tmp_path):
    path = tmp_path / "a.h5"
    write_1d(path)
    with h5py.File(path, "r+") as f:
        f["tensor"][..., 1] = 3.0
    stats = make(path).stats
    assert (
        stats["field_std"][1].item() == pytest.approx(1e-6) and stats["field_mean"][1].item() == 3.0
    )


def test_loaders_give_raw_train_windows_and_val_one_step_plus_rollout(tmp_path):
    tensor = write_1d(tmp_path / "a.h5")
    dm = make(
        tmp_path / "a.h5",
        batch_size=4,
        train_horizon=2,
        rollout_horizon=3,
        rollout_starts=[1],
        frame_stride=1,
    )
    assert (
        dm.field_spec == {"u": 2}
        and dm.num_channels == 2
        and dm.grid_shape == (5,)
        and dm.coord_dim == 1
    )
    assert dm.dt == pytest.approx(0.1)
    train = list(dm.train_dataloader())
    assert sum(len(b["traj"]) for b in train) == 8 * 4  # 6 frames, horizon 2: starts 0..3
    for batch in train:
        assert "mask" not in batch and batch["targets"].shape[1:] == (2, 5, 2)
        for row, (traj, t0) in enumerate(zip(batch["traj"].tolist(), batch["t0"].tolist())):
            assert traj in dm.train_trajectories
            torch.testing.assert_close(
                batch["fields"][row], torch.from_numpy(tensor[traj, t0]), rtol=0, atol=0
            )
            torch.testing.assert_close(
                batch["targets"][row],
                torch.from_numpy(tensor[traj, t0 + 1 : t0 + 3]),
                rtol=0,
                atol=0,
            )
    for loaders, ids in (
        (dm.val_dataloader(), dm.val_trajectories),
        (dm.test_dataloader(), dm.test_trajectories),
    ):
        one_step, rollout = loaders
        pairs = [(tr, t) for b in one_step for tr, t in zip(b["traj"].tolist(), b["t0"].tolist())]
        assert pairs == [(tr, t) for tr in ids for t in range(5)]
        (batch,) = list(rollout)
        assert batch["traj"].tolist() == ids and batch["t0"].tolist() == [1] * len(ids)
        torch.testing.assert_close(
            batch["targets"][0], torch.from_numpy(tensor[ids[0], 2:5]), rtol=0, atol=0
        )


def test_rollout_windows_start_at_every_listed_frame(tmp_path):
    tensor = write_1d(tmp_path / "a.h5", steps=8)
    dm = make(tmp_path / "a.h5", rollout_horizon=3, rollout_starts=[4, 0], split=[0.6, 0.2, 0.2])
    assert dm.rollout_starts == [0, 4]
    ids = dm.test_trajectories
    windows = [(tr, t0, b["targets"][row]) for b in dm.test_dataloader()[1]
               for row, (tr, t0) in enumerate(zip(b["traj"].tolist(), b["t0"].tolist()))]
    assert [(tr, t0) for tr, t0, _ in windows] == [(tr, t0) for t0 in (0, 4) for tr in ids]
    for tr, t0, targets in windows:
        torch.testing.assert_close(targets, torch.from_numpy(tensor[tr, t0 + 1:t0 + 4]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs 9"):  # a start whose window runs past the last frame
        make(tmp_path / "a.h5", rollout_horizon=3, rollout_starts=[0, 5])
    for bad in ([], [0, 0], [-1], [1.5]):
        with pytest.raises(ValueError, match="rollout_starts"):
            GridDataModule(tmp_path / "a.h5", rollout_starts=bad)


def test_frame_stride_scales_dt(tmp_path):
    write_1d(tmp_path / "a.h5")
    dm = make(tmp_path / "a.h5", frame_stride=2, rollout_horizon=2)
    assert dm.dt == pytest.approx(0.2)
    batch = next(iter(dm.val_dataloader()[1]))
    torch.testing.assert_close(batch["dt"], torch.full_like(batch["dt"], 0.2))


def _all_batches(dm):
    return [
        b
        for loaders in (dm.val_dataloader(), dm.test_dataloader())
        for loader in loaders
        for b in loader
    ]


@pytest.mark.parametrize("cls, writer", [(GridDataModule, write_1d), (MeshDataModule, write_mesh)])
def test_two_workers_return_the_same_batches_as_the_main_process(tmp_path, cls, writer):
    writer(tmp_path / "a.h5")
    serial = _all_batches(make(tmp_path / "a.h5", cls, batch_size=2))
    dm = make(tmp_path / "a.h5", cls, batch_size=2, num_workers=2)
    assert dm.val_dataloader()[0].persistent_workers
    parallel = _all_batches(dm)
    assert len(parallel) == len(serial)
    for a, b in zip(serial, parallel):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def _window_order(loader):
    return [pair for batch in loader for pair in zip(batch["traj"].tolist(), batch["t0"].tolist())]


def _validate(dm):
    for loader in dm.val_dataloader():
        list(loader)


@pytest.mark.parametrize("workers, resumed_workers", [(0, 0), (2, 2), (2, 0), (0, 2)])
def test_train_order_after_restoring_the_rng_states_is_that_of_the_uninterrupted_run(tmp_path, workers,
                                                                                     resumed_workers):
    """What a resumed run relies on (rng_state.py): with the global RNG states of the checkpoint written
    after an epoch's validation restored, new loaders shuffle the next epochs as the uninterrupted
    loaders do, also when those keep persistent workers from epoch to epoch, and when num_workers
    changes between the two starts (which resume allows)."""
    write_1d(tmp_path / "a.h5")
    torch.manual_seed(0)
    dm = make(tmp_path / "a.h5", batch_size=2, num_workers=workers)
    train = dm.train_dataloader()
    _window_order(train)
    _validate(dm)
    checkpoint = collect_rng_states()
    expected = [_window_order(train)]
    _validate(dm)
    expected.append(_window_order(train))

    set_rng_states(checkpoint)
    resumed = make(tmp_path / "a.h5", batch_size=2, num_workers=resumed_workers)
    train = resumed.train_dataloader()
    got = [_window_order(train)]
    _validate(resumed)
    got.append(_window_order(train))
    assert got == expected
    assert expected[0] != expected[1]  # the epochs are shuffled differently


def test_mesh_module_pads_batches_and_masks_real_points(tmp_path):
    write_mesh(tmp_path / "m.h5")
    dm = make(tmp_path / "m.h5", MeshDataModule, batch_size=5, split=(0.6, 0.2, 0.2))
    assert dm.grid_shape is None and dm.coord_dim == 2 and dm.field_names == ["u"]
    batch = next(iter(dm.train_dataloader()))
    counts = {0: 9, 1: 4, 2: 6, 3: 7, 4: 5}
    width = batch["fields"].shape[1]
    assert width == max(counts[t] for t in batch["traj"].tolist())
    for row, traj in enumerate(batch["traj"].tolist()):
        assert batch["mask"][row].tolist() == [True] * counts[traj] + [False] * (
            width - counts[traj]
        )


TINY_2D = {"num": 5, "progress": False, "resolution": 10, "num_steps": 4, "dt_out": 0.05}


@pytest.mark.parametrize(
    ("cls", "name", "options"),
    [
        (GridDataModule, "burgers2d", {}),
        (MeshDataModule, "burgers2d_mesh", {"min_points": 20, "max_points": 40}),
    ],
)
def test_prepare_data_generates_a_missing_file_once_and_setup_reads_it(
    tmp_path, cls, name, options
):
    path = tmp_path / "generated" / f"{name}.h5"
    dm = cls(path, generate=name, generate_options={**TINY_2D, **options}, rollout_horizon=2)
    dm.prepare_data()
    written = path.stat().st_mtime_ns
    dm.prepare_data()
    assert path.stat().st_mtime_ns == written
    dm.setup("fit")
    assert dm.field_names == ["u", "v"] and dm.coord_dim == 2 and dm.dt == pytest.approx(0.05)
    assert sorted(dm.train_trajectories + dm.val_trajectories + dm.test_trajectories) == list(
        range(5)
    )
    batch = next(iter(dm.val_dataloader()[1]))
    with h5py.File(path) as f:
        for row, traj in enumerate(batch["traj"].tolist()):
            group = f[f"{traj:04d}"]
            points = group["coords"].shape[0] if "coords" in group else 100
            data = torch.from_numpy(group["data"][1:3]).reshape(2, points, 2)
            torch.testing.assert_close(batch["targets"][row][:, :points], data, rtol=0, atol=0)
            if cls is MeshDataModule:
                assert int(batch["mask"][row].sum()) == points
    assert dm.grid_shape == ((10, 10) if cls is GridDataModule else None)
