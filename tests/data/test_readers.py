"""Readers return exactly the values, coordinates and times written by hand into small files."""

from __future__ import annotations

import os
import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from upt_lightning.errors import DataError
from upt_lightning.data.readers import (
    MeshSource,
    PDEBench1DSource,
    PDEBenchCFDSource,
    PDEBenchGroupsSource,
    open_source,
)


def field(traj, t, x, y, c):
    """Known value at a point; every input is a multiple of 1/8 so float32 stores it exactly."""
    return 1000.0 * traj + 100.0 * t + 10.0 * x + y + 0.5 * c


def write_1d(path, trajectories=3, steps=5, points=8, channels=None):
    x = np.arange(points) * 0.25
    n, t, c = np.ogrid[:trajectories, :steps, : channels or 1]
    tensor = field(n[..., None], t[..., None], x[None, None, :, None], 0.0, c[:, :, None]).astype(
        np.float32
    )
    with h5py.File(path, "w") as f:
        f["tensor"] = tensor if channels else tensor[..., 0]
        f["x-coordinate"] = x.astype(np.float32)
        # PDEBench's quirk: one more time than saved frames.
        f["t-coordinate"] = (np.arange(steps + 1) * 0.125).astype(np.float32)
    return tensor if channels else tensor[..., 0]


def write_groups(path, trajectories=2, steps=4, nx=4, ny=3, channels=2, names=True, channel_axis=True):
    with h5py.File(path, "w") as f:
        if names:
            f.attrs["field_names"] = [f"q{c}" for c in range(channels)]
        for n in range(trajectories):
            x = np.arange(nx) * 0.5 + n  # each trajectory has its own grid
            y = np.arange(ny) * 0.25
            t = np.arange(steps) * 0.125 + n
            data = np.zeros((steps, nx, ny, channels), np.float32)
            for k in range(steps):
                for i in range(nx):
                    for j in range(ny):
                        data[k, i, j] = [field(n, k, x[i], y[j], c) for c in range(channels)]
            group = f.create_group(f"{n:04d}")
            group.create_dataset("data", data=data if channel_axis else data[..., 0], compression="lzf")
            group["grid/x"], group["grid/y"], group["grid/t"] = x, y, t


def test_pdebench_groups_without_a_channel_axis_read_as_one_channel_on_the_2d_grid(tmp_path):
    """(T, X, Y) with grid/x and grid/y: a 2D grid of one field, not a 1D grid of X points with Y channels."""
    path = tmp_path / "one_field.h5"
    write_groups(path, nx=5, ny=3, channels=1, names=False, channel_axis=False)
    source = open_source(path)
    assert source.grid_shape == (5, 3) and source.coord_dim == 2
    assert source.field_spec == {"c0": 1} and source.num_points(0) == 15
    frames = source.frames(1, [2])
    coords = source.coords(1)
    assert frames.shape == (1, 15, 1) and coords.shape == (15, 2)
    for n, (px, py) in enumerate(coords.tolist()):
        assert frames[0, n, 0].item() == field(1, 2, px, py, 0)


def test_pdebench_groups_data_that_fits_neither_reading_of_the_grid_is_refused(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("0000")
        group["data"] = np.zeros((4, 5), np.float32)  # no y axis, though the grid names one
        group["grid/x"], group["grid/y"], group["grid/t"] = np.arange(5.0), np.arange(3.0), np.arange(4.0)
    with pytest.raises(DataError, match=r"shape \(4, 5\).*2 spatial axes.*\(time, x, y\)"):
        open_source(path)


def test_pdebench_1d_reads_frames_coords_and_first_t_times(tmp_path):
    path = tmp_path / "burgers.h5"
    tensor = write_1d(path)
    source = open_source(path)
    assert isinstance(source, PDEBench1DSource)
    assert source.field_spec == {"u": 1} and source.grid_shape == (8,) and source.coord_dim == 1
    assert source.num_trajectories == 3 and source.num_steps(2) == 5 and source.num_points(0) == 8
    torch.testing.assert_close(
        source.coords(1), torch.from_numpy(np.arange(8) * 0.25).float()[:, None]
    )
    # 6 stored times for 5 frames: the reader keeps the first 5.
    torch.testing.assert_close(source.times(1), torch.arange(5, dtype=torch.float64) * 0.125)
    for order in ([4, 0, 2], [0, 2, 4], [1, 2, 3], [3, 3]):
        expected = torch.from_numpy(tensor[1, order])[..., None]
        torch.testing.assert_close(source.frames(1, order), expected, rtol=0, atol=0)


def test_pdebench_1d_with_channel_axis_is_one_field_with_all_channels(tmp_path):
    path = tmp_path / "multi.h5"
    tensor = write_1d(path, channels=2)
    source = open_source(path)
    assert source.field_spec == {"u": 2}
    frames = source.frames(2, [1])
    assert frames.shape == (1, 8, 2)
    torch.testing.assert_close(frames[0], torch.from_numpy(tensor[2, 1]), rtol=0, atol=0)
    assert not torch.equal(frames[0, :, 0], frames[0, :, 1])


@pytest.mark.parametrize("names", [True, False])
def test_pdebench_groups_lzf_row_major_points_and_per_group_grid(tmp_path, names):
    path = tmp_path / "groups.h5"
    write_groups(path, names=names)
    with h5py.File(path) as f:
        assert f["0001/data"].compression == "lzf"
    source = open_source(path)
    assert isinstance(source, PDEBenchGroupsSource)
    assert source.field_names == (["q0", "q1"] if names else ["c0", "c1"])
    assert source.grid_shape == (4, 3) and source.coord_dim == 2
    for traj in (0, 1):
        coords = source.coords(traj)
        x = np.arange(4) * 0.5 + traj
        y = np.arange(3) * 0.25
        for i in range(4):
            for j in range(3):
                assert coords[i * 3 + j].tolist() == [x[i], y[j]]
        torch.testing.assert_close(
            source.times(traj), torch.arange(4, dtype=torch.float64) * 0.125 + traj
        )
        frames = source.frames(traj, [3, 1])
        for row, k in enumerate([3, 1]):
            for n, (px, py) in enumerate(coords.tolist()):
                assert frames[row, n].tolist() == [field(traj, k, px, py, c) for c in range(2)]


def test_pdebench_cfd_channel_order_grid_and_times(tmp_path):
    path = tmp_path / "cfd.h5"
    trajectories, steps, nx, ny = 2, 3, 4, 2
    x, y = np.arange(nx) * 0.25, np.arange(ny) * 0.5
    names = ("density", "pressure", "Vx", "Vy")
    with h5py.File(path, "w") as f:
        for c, name in enumerate(names):
            values = np.zeros((trajectories, steps, nx, ny), np.float32)
            for n in range(trajectories):
                for k in range(steps):
                    values[n, k] = field(n, k, x[:, None], y[None, :], c)
            f[name] = values
        f["x-coordinate"], f["y-coordinate"] = x, y
        f["t-coordinate"] = np.arange(steps + 1) * 0.5
    source = open_source(path)
    assert isinstance(source, PDEBenchCFDSource)
    assert source.field_spec == {"density": 1, "pressure": 1, "Vx": 1, "Vy": 1}
    assert source.grid_shape == (4, 2)
    torch.testing.assert_close(source.times(0), torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    coords = source.coords(1)
    frames = source.frames(1, [2])
    for n, (px, py) in enumerate(coords.tolist()):
        assert (px, py) == (x[n // ny], y[n % ny])
        assert frames[0, n].tolist() == [field(1, 2, px, py, c) for c in range(4)]


def write_mesh(path, points=(7, 5), steps=3):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs["layout"] = "upt_mesh"
        f.attrs["field_names"] = ["p", "s"]
        for n, count in enumerate(points):
            coords = (rng.integers(0, 16, size=(count, 2)) / 8).astype(np.float32)
            data = np.stack(
                [
                    np.stack([field(n, k, coords[:, 0], coords[:, 1], c) for c in range(2)], -1)
                    for k in range(steps)
                ]
            ).astype(np.float32)
            group = f.create_group(f"{n:04d}")
            group["coords"], group["data"] = coords, data
            group["t"] = (np.arange(steps) * 0.25 + 1).astype(np.float32)


def test_mesh_reader_per_trajectory_point_counts_and_values(tmp_path):
    path = tmp_path / "mesh.h5"
    write_mesh(path)
    source = open_source(path)
    assert isinstance(source, MeshSource)
    assert source.grid_shape is None and source.coord_dim == 2 and source.field_names == ["p", "s"]
    assert [source.num_points(0), source.num_points(1)] == [7, 5]
    for traj in (0, 1):
        coords = source.coords(traj)
        frames = source.frames(traj, [0, 2])
        torch.testing.assert_close(
            source.times(traj), torch.tensor([1.0, 1.25, 1.5], dtype=torch.float64)
        )
        for row, k in enumerate([0, 2]):
            for n, (px, py) in enumerate(coords.tolist()):
                assert frames[row, n].tolist() == [field(traj, k, px, py, c) for c in range(2)]


def test_explicit_layout_matches_auto_detection(tmp_path):
    path = tmp_path / "mesh.h5"
    write_mesh(path)
    explicit = open_source(path, layout="upt_mesh")
    torch.testing.assert_close(explicit.frames(1, [1]), open_source(path).frames(1, [1]))


class _FramesAndHandleOwner(Dataset):
    """Frame 0 of trajectory ``i``, plus (this process, process that opened the handle used)."""

    def __init__(self, source):
        self.source = source

    def __len__(self):
        return self.source.num_trajectories

    def __getitem__(self, i):
        frames = self.source.frames(i, [0])
        return frames, torch.tensor([os.getpid(), self.source._pid])


def test_reader_pickles_with_open_handle_and_reopens_in_forked_workers(tmp_path):
    path = tmp_path / "burgers.h5"
    tensor = write_1d(path, trajectories=4)
    source = open_source(path)
    source.frames(0, [0])  # the parent's handle is now open
    clone = pickle.loads(pickle.dumps(source))
    torch.testing.assert_close(
        clone.frames(3, [2, 4]), torch.from_numpy(tensor[3, [2, 4]])[..., None]
    )
    loader = DataLoader(_FramesAndHandleOwner(source), batch_size=1, num_workers=2)
    frames, pids = (torch.cat(parts) for parts in zip(*loader))
    torch.testing.assert_close(frames, torch.from_numpy(tensor[:, :1])[..., None], rtol=0, atol=0)
    # Each worker read through a handle it opened itself, not the one inherited from the parent.
    assert bool((pids[:, 0] == pids[:, 1]).all()) and os.getpid() not in pids[:, 0].tolist()
    torch.testing.assert_close(source.frames(2, [1]), torch.from_numpy(tensor[2, [1]])[..., None])
