"""The loader's fast path (cached coordinates and times, one slice per window, stacked grid batches,
padding-only zeroing) gives exactly what a plain h5py read and a zero-filled collate give."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from test_readers import write_groups, write_mesh
from torch.utils.data import DataLoader

from upt_lightning.data.collate import collate_mesh_windows, collate_windows
from upt_lightning.data.datasets import TrajectoryWindows
from upt_lightning.data.readers import MeshSource, PDEBenchGroupsSource, open_source
from upt_lightning.data.readers.cache import TensorLRU


def reference_trajectory(path, traj):
    """``(data (T, N, C), coords (N, d), times (T,))`` of ``traj``, read whole with plain h5py."""
    with h5py.File(path, "r") as f:
        group = f[f"{traj:04d}"]
        if "coords" in group:  # upt_mesh
            return group["data"][...], group["coords"][...], group["t"][...].astype(np.float64)
        data, grid = group["data"][...], group["grid"]
        x, y = np.meshgrid(grid["x"][...], grid["y"][...], indexing="ij")
        coords = np.stack([x.reshape(-1), y.reshape(-1)], axis=-1)
        times = grid["t"][...].astype(np.float64)
        return data.reshape(len(data), -1, data.shape[-1]), coords, times


def reference_batch(path, windows, indices, mesh):
    """The batch of ``windows[indices]`` built the straightforward way: zero-filled buffers."""
    parts = []
    for index in indices:
        traj, t0 = windows.window(index)
        data, coords, times = reference_trajectory(path, traj)
        s = windows.frame_stride
        frames = torch.from_numpy(data[t0 : t0 + windows.horizon * s + 1 : s].astype(np.float32))
        parts.append((frames, torch.from_numpy(coords.astype(np.float32)), times[t0 + s] - times[t0], traj, t0))
    size = max(frames.shape[1] for frames, *_ in parts)
    batch = {"fields": torch.zeros(len(parts), size, parts[0][0].shape[-1]),
             "targets": torch.zeros(len(parts), windows.horizon, size, parts[0][0].shape[-1]),
             "coords": torch.zeros(len(parts), size, parts[0][1].shape[-1])}
    for row, (frames, coords, _, _, _) in enumerate(parts):
        count = frames.shape[1]
        batch["fields"][row, :count] = frames[0]
        batch["targets"][row, :, :count] = frames[1:]
        batch["coords"][row, :count] = coords
    batch["dt"] = torch.tensor([dt for _, _, dt, _, _ in parts], dtype=torch.float32)
    batch["traj"] = torch.tensor([traj for *_, traj, _ in parts])
    batch["t0"] = torch.tensor([t0 for *_, t0 in parts])
    if mesh:
        counts = torch.tensor([frames.shape[1] for frames, *_ in parts])
        batch["mask"] = torch.arange(size).unsqueeze(0) < counts.unsqueeze(1)
    return batch


@pytest.mark.parametrize("mesh", [False, True], ids=["grid", "mesh"])
@pytest.mark.parametrize("cache_bytes", [64 * 2**20, 0], ids=["cached", "no-cache"])
def test_batches_equal_plain_h5py_reads_and_zero_filled_collate(tmp_path, monkeypatch, mesh, cache_bytes):
    path = tmp_path / "data.h5"
    if mesh:
        write_mesh(path, points=(7, 5, 9), steps=6)  # different meshes: padding in every batch
    else:
        write_groups(path, trajectories=3, steps=6)  # each trajectory on its own grid
    cls = MeshSource if mesh else PDEBenchGroupsSource
    monkeypatch.setattr(cls, "metadata_cache_bytes", cache_bytes)
    windows = TrajectoryWindows(open_source(path), [2, 0, 1], horizon=2, frame_stride=2)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(0)).tolist()
    collate = collate_mesh_windows if mesh else collate_windows
    loader = DataLoader(torch.utils.data.Subset(windows, order), batch_size=4, collate_fn=collate)
    for first, batch in zip(range(0, len(order), 4), loader):
        expected = reference_batch(path, windows, order[first : first + 4], mesh)
        assert batch.keys() == expected.keys()
        for key, value in expected.items():
            assert batch[key].dtype == value.dtype, key
            assert torch.equal(batch[key], value), key


@pytest.mark.parametrize("mesh", [False, True], ids=["grid", "mesh"])
def test_frames_in_any_order_with_repeats_equal_plain_reads(tmp_path, mesh):
    path = tmp_path / "data.h5"
    (write_mesh if mesh else write_groups)(path, steps=5)
    source = open_source(path)
    data, _, _ = reference_trajectory(path, 1)
    for request in ([3, 1, 1, 4], [2], [0, 2, 4], [4, 3]):
        assert torch.equal(source.frames(1, request), torch.from_numpy(data[request]))


@pytest.mark.parametrize("mesh", [False, True], ids=["grid", "mesh"])
@pytest.mark.parametrize("cache_bytes", [64 * 2**20, 100], ids=["all-cached", "evicting"])
def test_cached_coords_and_times_do_not_leak_between_trajectories(tmp_path, monkeypatch, mesh, cache_bytes):
    path = tmp_path / "data.h5"
    if mesh:
        write_mesh(path, points=(7, 5, 9), steps=3)
    else:
        write_groups(path, trajectories=3, steps=3)
    monkeypatch.setattr(MeshSource if mesh else PDEBenchGroupsSource, "metadata_cache_bytes", cache_bytes)
    source = open_source(path)
    for traj in (0, 1, 0, 2, 1, 2, 0):
        _, coords, times = reference_trajectory(path, traj)
        got = source.coords(traj)
        assert torch.equal(got, torch.from_numpy(coords.astype(np.float32)))
        assert torch.equal(source.times(traj), torch.from_numpy(times))
        got.add_(100.0)  # a caller's in-place change must not reach the cache
        assert torch.equal(source.cached_coords(traj), torch.from_numpy(coords.astype(np.float32)))
    assert source._cache.bytes <= cache_bytes


def test_shared_grid_readers_keep_one_copy_and_the_store_respects_its_budget(tmp_path, monkeypatch):
    from test_readers import write_1d

    write_1d(tmp_path / "a.h5", trajectories=4, points=8)
    shared = open_source(tmp_path / "a.h5")
    for traj in range(4):
        shared.coords(traj), shared.times(traj)
    assert len(shared._cache) == 2  # one coordinate and one time tensor for all trajectories

    # Mesh coords (7|5|9, 2) float32 = 56|40|72 bytes, times (3,) float64 = 24 bytes.
    write_mesh(tmp_path / "m.h5", points=(7, 5, 9), steps=3)
    monkeypatch.setattr(MeshSource, "metadata_cache_bytes", 130)
    mesh = open_source(tmp_path / "m.h5")
    for traj in (0, 1, 2):
        mesh.coords(traj)
    # 56 + 40 bytes fit; adding 72 evicts the least recently used, trajectory 0.
    assert mesh._cache.bytes == 112 and list(mesh._cache._items) == [("coords", 1), ("coords", 2)]
    mesh.close()
    assert len(mesh._cache) == 0


def test_tensor_lru_evicts_least_recently_used_and_skips_oversized():
    store = TensorLRU(max_bytes=3 * 4 * 10)  # three float32 (10,) tensors
    made = []

    def make(value, size=10):
        made.append(value)
        return torch.full((size,), float(value))

    for key in (0, 1, 2):
        store.get(key, lambda key=key: make(key))
    store.get(0, lambda: make(-1))  # a hit refreshes 0: 1 is now the oldest
    store.get(3, lambda: make(3))
    assert made == [0, 1, 2, 3] and store.bytes == 120
    store.get(1, lambda: make(11))  # 1 was evicted: made again
    assert made[-1] == 11 and store.get(0, lambda: make(-1))[0] == 0.0
    big = store.get("big", lambda: make(99, size=100))
    assert big.shape == (100,) and "big" not in store._items and store.bytes <= 120
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        TensorLRU(-1)
