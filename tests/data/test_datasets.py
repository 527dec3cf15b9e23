"""Windows hold the right frames and dt; collate stacks grids and pads meshes with a mask."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from upt_lightning.data.collate import collate_mesh_windows, collate_windows
from upt_lightning.data.datasets import TrajectoryWindows
from upt_lightning.data.readers import open_source

# Uneven spacing, so a dt taken from the frame index instead of the file's times would differ.
TIMES = np.array([0.0, 0.5, 1.5, 3.0, 5.0, 7.5, 10.5])


def write_1d(path, trajectories=3, points=6):
    rng = np.random.default_rng(0)
    tensor = rng.normal(size=(trajectories, len(TIMES), points)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f["tensor"] = tensor
        f["x-coordinate"] = np.linspace(0, 1, points)
        f["t-coordinate"] = TIMES
    return tensor


def test_windows_hold_start_frame_strided_targets_and_file_dt(tmp_path):
    tensor = write_1d(tmp_path / "a.h5")
    source = open_source(tmp_path / "a.h5")
    windows = TrajectoryWindows(source, [2, 0], horizon=2, frame_stride=2)
    # 7 frames, span 4: starts 0, 1, 2 in each trajectory.
    assert [windows.window(i) for i in range(len(windows))] == [
        (2, 0),
        (2, 1),
        (2, 2),
        (0, 0),
        (0, 1),
        (0, 2),
    ]
    for i in range(len(windows)):
        item = windows[i]
        traj, t0 = item["traj"], item["t0"]
        assert (traj, t0) == windows.window(i)
        torch.testing.assert_close(
            item["fields"], torch.from_numpy(tensor[traj, t0])[:, None], rtol=0, atol=0
        )
        expected = torch.from_numpy(tensor[traj, [t0 + 2, t0 + 4]])[..., None]
        torch.testing.assert_close(item["targets"], expected, rtol=0, atol=0)
        assert item["dt"].dtype == torch.float32 and item["dt"].item() == TIMES[t0 + 2] - TIMES[t0]
        torch.testing.assert_close(item["coords"][:, 0], torch.linspace(0, 1, 6))


@pytest.mark.parametrize(
    ("horizon", "stride", "start", "max_windows", "starts"),
    [
        (1, 1, 0, None, [0, 1, 2, 3, 4, 5]),
        (1, 2, 0, None, [0, 2, 4]),
        (3, 1, 2, None, [2, 3]),
        (2, 1, 1, 1, [1]),
        (6, 1, 0, None, [0]),
    ],
)
def test_window_starts_follow_stride_start_and_limit(
    tmp_path, horizon, stride, start, max_windows, starts
):
    write_1d(tmp_path / "a.h5", trajectories=2)
    windows = TrajectoryWindows(
        open_source(tmp_path / "a.h5"), [0, 1], horizon, stride, 1, start, max_windows
    )
    assert len(windows) == 2 * len(starts)
    assert [windows.window(i) for i in range(len(windows))] == [
        (t, s) for t in (0, 1) for s in starts
    ]
    assert windows[len(windows) - 1]["targets"].shape == (horizon, 6, 1)
    with pytest.raises(IndexError, match="out of range"):
        windows[len(windows)]


def test_collate_grid_stacks_without_mask(tmp_path):
    tensor = write_1d(tmp_path / "a.h5")
    windows = TrajectoryWindows(open_source(tmp_path / "a.h5"), [1, 2], horizon=3)
    batch = collate_windows([windows[0], windows[5]])
    assert "mask" not in batch
    assert batch["traj"].tolist() == [1, 2] and batch["t0"].tolist() == [0, 1]
    torch.testing.assert_close(batch["fields"][1, :, 0], torch.from_numpy(tensor[2, 1]))
    torch.testing.assert_close(batch["targets"][0, :, :, 0], torch.from_numpy(tensor[1, 1:4]))
    torch.testing.assert_close(batch["dt"], torch.tensor([0.5, 1.0]))
    assert batch["coords"].shape == (2, 6, 1)


def _mesh_item(points, value):
    return {
        "fields": torch.full((points, 2), value),
        "targets": torch.full((3, points, 2), value + 1),
        "coords": torch.full((points, 2), value + 2),
        "dt": torch.tensor(0.1),
        "traj": int(value),
        "t0": 0,
    }


def test_collate_mesh_pads_with_zeros_and_marks_real_points():
    batch = collate_mesh_windows([_mesh_item(3, 1.0), _mesh_item(5, 2.0), _mesh_item(1, 3.0)])
    assert batch["fields"].shape == (3, 5, 2) and batch["targets"].shape == (3, 3, 5, 2)
    expected_mask = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool
    )
    assert torch.equal(batch["mask"], expected_mask)
    for row, value in enumerate([1.0, 2.0, 3.0]):
        real = expected_mask[row]
        assert bool((batch["fields"][row, real] == value).all())
        assert bool((batch["targets"][row][:, real] == value + 1).all())
        assert bool((batch["coords"][row, real] == value + 2).all())
        for key in ("fields", "coords"):
            assert bool((batch[key][row, ~real] == 0).all())
        assert bool((batch["targets"][row][:, ~real] == 0).all())


def test_collate_mesh_keeps_mask_when_counts_agree_and_grid_refuses_ragged():
    batch = collate_mesh_windows([_mesh_item(4, 1.0), _mesh_item(4, 2.0)])
    assert bool(batch["mask"].all()) and batch["mask"].shape == (2, 4)
    with pytest.raises(ValueError, match="different point counts"):
        collate_windows([_mesh_item(4, 1.0), _mesh_item(2, 2.0)])
