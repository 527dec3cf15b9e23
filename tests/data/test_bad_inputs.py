"""Each malformed file or impossible request fails early with a DataError that says what and how."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from upt_lightning.data.datamodules import GridDataModule, MeshDataModule
from upt_lightning.data.datasets import TrajectoryWindows
from upt_lightning.data.readers import open_source
from upt_lightning.data.scan import validate_source
from upt_lightning.errors import DataError


def write(path, datasets=None, attrs=None):
    """Write ``{name: array}`` (group paths allowed) and root attributes; return the path."""
    with h5py.File(path, "w") as f:
        for name, value in (datasets or {}).items():
            f[name] = value
        f.attrs.update(attrs or {})
    return path


def burgers(trajectories=3, steps=5, points=4, x=None, t=None):
    return {
        "tensor": np.ones((trajectories, steps, points), np.float32),
        "x-coordinate": np.arange(points, dtype=float) if x is None else x,
        "t-coordinate": np.arange(steps, dtype=float) if t is None else t,
    }


def mesh(points=(3, 3), steps=4):
    datasets = {}
    for n, count in enumerate(points):
        datasets[f"{n:04d}/coords"] = np.zeros((count, 2), np.float32)
        datasets[f"{n:04d}/data"] = np.ones((steps, count, 1), np.float32)
        datasets[f"{n:04d}/t"] = np.arange(steps, dtype=float)
    return datasets


MESH_ATTRS = {"layout": "upt_mesh", "field_names": ["u"]}


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5 does not exist") as info:
        open_source(tmp_path / "nope.h5")
    assert isinstance(info.value, DataError)


def test_datamodule_missing_file_without_generator_says_how_to_generate(tmp_path):
    dm = GridDataModule(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match=r"nope.h5 does not exist.*generate="):
        dm.prepare_data()
    with pytest.raises(FileNotFoundError, match=r"call prepare_data\(\)"):
        dm.setup("fit")


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not hdf5")
    with pytest.raises(DataError, match="notes.h5 is not an HDF5 file"):
        open_source(path)


def test_unknown_structure_lists_found_keys_and_supported_layouts(tmp_path):
    path = write(tmp_path / "odd.h5", {"velocity": np.zeros(3)})
    with pytest.raises(
        DataError, match=r"unknown structure \(root keys \['velocity'\].*pdebench_1d.*upt_mesh"
    ):
        open_source(path)


@pytest.mark.parametrize(
    ("datasets", "layout", "message"),
    [
        (
            {k: v for k, v in burgers().items() if k != "x-coordinate"},
            "auto",
            r"root lacks \['x-coordinate'\]",
        ),
        (
            {
                "0000/data": np.ones((2, 3, 3, 1)),
                "0000/grid/x": np.arange(3.0),
                "0000/grid/y": np.arange(3.0),
            },
            "auto",
            r"group '/0000/grid' lacks \['t'\]",
        ),
        (
            {
                "density": np.ones((2, 3, 4, 4)),
                "pressure": np.ones((2, 3, 4, 4)),
                "Vx": np.ones((2, 3, 4, 4)),
                "x-coordinate": np.arange(4.0),
                "y-coordinate": np.arange(4.0),
                "t-coordinate": np.arange(3.0),
            },
            "auto",
            r"root lacks \['Vy'\]",
        ),
        (
            {"0000/coords": np.zeros((3, 2)), "0000/t": np.arange(2.0)},
            "upt_mesh",
            r"group '/0000' lacks \['data'\]",
        ),
    ],
)
def test_missing_keys_are_named(tmp_path, datasets, layout, message):
    with pytest.raises(DataError, match=message):
        open_source(write(tmp_path / "f.h5", datasets), layout)


def test_wrong_rank_says_expected_and_got(tmp_path):
    path = write(tmp_path / "f.h5", {**burgers(), "tensor": np.ones((3, 5), np.float32)})
    with pytest.raises(
        DataError, match=r"'/tensor' has rank 2 \(shape \(3, 5\)\), expected rank 3 or 4"
    ):
        open_source(path)
    mesh_path = write(tmp_path / "m.h5", {**mesh(), "0001/data": np.ones((4, 3))}, MESH_ATTRS)
    with pytest.raises(DataError, match=r"'/0001/data' has rank 2 .* expected rank 3"):
        open_source(mesh_path)


def test_empty_files(tmp_path):
    with pytest.raises(DataError, match="holds 0 trajectories"):
        open_source(write(tmp_path / "a.h5", burgers(trajectories=0)))
    with pytest.raises(DataError, match="trajectory 1 has 0 points"):
        open_source(write(tmp_path / "b.h5", mesh(points=(3, 0)), MESH_ATTRS))
    with pytest.raises(DataError, match="holds 0 trajectory groups"):
        open_source(write(tmp_path / "c.h5", {}, MESH_ATTRS))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_sample_names_the_trajectory_in_item_read_and_validate_source(tmp_path, bad):
    values = burgers(steps=7)
    values["tensor"][2, 5, 1] = bad
    source = open_source(write(tmp_path / "f.h5", values))
    windows = TrajectoryWindows(source, [0, 2])
    for i in range(len(windows)):
        traj, t0 = windows.window(i)
        if traj == 2 and t0 in (4, 5):
            with pytest.raises(
                DataError, match=r"trajectory 2, frames \[.*5.*\] contains 1 NaN or Inf"
            ):
                windows[i]
        else:
            windows[i]
    with pytest.raises(DataError, match=r"trajectory 2, frames \[4, 5\]"):
        validate_source(source, chunk_frames=2)


def test_validate_source_passes_clean_file_and_rejects_non_increasing_times(tmp_path):
    validate_source(open_source(write(tmp_path / "ok.h5", mesh(), MESH_ATTRS)))
    bad = write(tmp_path / "t.h5", {**mesh(), "0001/t": np.array([0.0, 1.0, 1.0, 2.0])}, MESH_ATTRS)
    with pytest.raises(DataError, match="times of trajectory 1 do not increase strictly"):
        validate_source(open_source(bad))
    with pytest.raises(DataError, match="times must increase"):
        TrajectoryWindows(open_source(bad), [1])[1]


def test_rollout_longer_than_trajectory(tmp_path):
    path = write(tmp_path / "f.h5", burgers(trajectories=4, steps=5))
    dm = GridDataModule(path, rollout_horizon=10)
    with pytest.raises(
        DataError, match=r"has 5 time steps, but a window of horizon 10 .* needs 11"
    ):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("datasets", "message"),
    [
        (
            burgers(x=np.arange(3.0)),
            r"'/x-coordinate' has shape \(3,\) but the data has 4 points along x",
        ),
        (
            burgers(t=np.arange(7.0)),
            r"'/t-coordinate' has shape \(7,\) but the data has 5 time steps",
        ),
        (
            {
                "0000/data": np.ones((2, 3, 4, 1)),
                "0000/grid/x": np.arange(3.0),
                "0000/grid/y": np.arange(5.0),
                "0000/grid/t": np.arange(2.0),
            },
            r"'/0000/grid/y' has shape \(5,\) but the data has 4 points along y",
        ),
        (
            {**mesh(), "0001/coords": np.zeros((4, 2))},
            "group '0001' has coords for 4 points but data for 3",
        ),
    ],
)
def test_coordinate_lengths_must_match_the_data(tmp_path, datasets, message):
    attrs = MESH_ATTRS if "0000/coords" in datasets else None
    with pytest.raises(DataError, match=message):
        open_source(write(tmp_path / "f.h5", datasets, attrs))


def groups(y):
    """One PDEBench per-sample group on a 3 x len(y) grid whose y axis is ``y``."""
    return {"0000/data": np.ones((2, 3, len(y), 1)), "0000/grid/x": np.arange(3.0), "0000/grid/y": y,
            "0000/grid/t": np.arange(2.0)}


def cfd(y):
    """PDEBench CFD fields on a 4 x len(y) grid whose y axis is ``y``."""
    shape = (2, 3, 4, len(y))
    return {**{name: np.ones(shape) for name in ("density", "pressure", "Vx", "Vy")},
            "x-coordinate": np.arange(4.0), "y-coordinate": y, "t-coordinate": np.arange(3.0)}


@pytest.mark.parametrize(
    ("datasets", "message"),
    [
        (burgers(x=np.full(4, 0.5)), r"grid coordinate '/x-coordinate' is constant \(0.5 at all 4 points\)"),
        (burgers(x=np.array([0.0, 0.5, 0.25, 0.75])),
         r"'/x-coordinate' is not ordered \(it turns back or repeats at index 2: \[0.0, 0.5, 0.25, 0.75\]\)"),
        (groups(np.array([0.0, 1.0, 1.0, 2.0])), r"'/0000/grid/y' is not ordered .* at index 2"),
        (groups(np.zeros(4)), r"'/0000/grid/y' is constant"),
        (cfd(np.array([3.0, 2.0, 4.0])), r"'/y-coordinate' is not ordered .* at index 2: \[3.0, 2.0, 4.0\]"),
    ],
)
def test_constant_or_unordered_grid_axes_are_refused_by_name(tmp_path, datasets, message):
    path = write(tmp_path / "f.h5", datasets)
    with pytest.raises(DataError, match=message) as error:
        open_source(path).coords(0)
    assert str(path) in str(error.value) and "fix the coordinate in the file" in str(error.value)


def test_a_datamodule_refuses_an_unordered_axis_before_training(tmp_path):
    path = write(tmp_path / "f.h5", burgers(x=np.array([0.0, 0.5, 0.25, 0.75])))
    with pytest.raises(DataError, match="'/x-coordinate' is not ordered"):
        GridDataModule(path, rollout_horizon=1).setup("fit")  # the statistics read the coordinates


def test_a_decreasing_or_single_point_axis_is_ordered(tmp_path):
    coords = open_source(write(tmp_path / "f.h5", burgers(x=np.array([3.0, 2.0, 1.0, 0.0])))).coords(0)
    assert coords[:, 0].tolist() == [3.0, 2.0, 1.0, 0.0]
    assert open_source(write(tmp_path / "g.h5", groups(np.array([0.5])))).coords(0).shape == (3, 2)


def test_trajectories_must_share_grid_channels_and_coordinate_dimension(tmp_path):
    groups = {
        f"{n:04d}/{key}": value
        for n, nx in enumerate((3, 4))
        for key, value in (
            ("data", np.ones((2, nx, 2, 1))),
            ("grid/x", np.arange(float(nx))),
            ("grid/y", np.arange(2.0)),
            ("grid/t", np.arange(2.0)),
        )
    }
    with pytest.raises(DataError, match=r"group '0001' has data of shape \(2, 4, 2, 1\), group"):
        open_source(write(tmp_path / "g.h5", groups))
    ragged = {**mesh(), "0001/coords": np.zeros((3, 3)), "0001/data": np.ones((4, 3, 2))}
    with pytest.raises(DataError, match="group '0001' has 2 channels and 3-D coords, group '0000'"):
        open_source(write(tmp_path / "m.h5", ragged, MESH_ATTRS))


def test_field_names_must_match_channels(tmp_path):
    path = write(tmp_path / "m.h5", mesh(), {"layout": "upt_mesh", "field_names": ["u", "v"]})
    with pytest.raises(DataError, match=r"field_names=\['u', 'v'\] must give 1 distinct names"):
        open_source(path)


def test_datamodule_rejects_wrong_kind_too_few_trajectories_and_bad_split(tmp_path):
    mesh_path = write(tmp_path / "m.h5", mesh(points=(3, 3, 3)), MESH_ATTRS)
    with pytest.raises(DataError, match="is a mesh file .* use MeshDataModule"):
        GridDataModule(mesh_path, rollout_horizon=2).setup("fit")
    grid_path = write(tmp_path / "g.h5", burgers(trajectories=2))
    with pytest.raises(DataError, match="is a grid file .* use GridDataModule"):
        MeshDataModule(grid_path, rollout_horizon=2).setup("fit")
    with pytest.raises(DataError, match="only 2 trajectories: .* at least 3 trajectories"):
        GridDataModule(grid_path, rollout_horizon=2).setup("fit")
    with pytest.raises(ValueError, match="three positive fractions"):
        GridDataModule(grid_path, split=(0.9, 0.2, 0.1))


def test_out_of_range_requests(tmp_path):
    source = open_source(write(tmp_path / "f.h5", burgers()))
    with pytest.raises(IndexError, match="trajectory 3 out of range: .* has 3 trajectories"):
        source.frames(3, [0])
    with pytest.raises(IndexError, match=r"frame indices \[5\] out of range .*valid: 0..4"):
        source.frames(0, [5])
