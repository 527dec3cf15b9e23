"""The shared_mesh layout (one fixed point set for all trajectories) in HDF5 and .npz files.

Values, coordinates and times read back as written; a MeshDataModule's batches hold the file's frames at
each window's frames; each malformed file is refused at open with a DataError naming the key.
"""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

from upt_lightning.data import MeshDataModule, SharedMeshSource, detect_layout, open_source, validate_source
from upt_lightning.errors import DataError

FORMATS = ["h5", "npz", "npz_compressed"]


def arrays(trajectories=3, steps=4, points=200, channels=2, dim=2):
    """``coords`` (P, d), ``data`` (N, T, P, C) with distinct values everywhere, ``t`` (T,)."""
    rng = np.random.default_rng(0)
    return {
        "coords": rng.random((points, dim)).astype(np.float32),
        "data": rng.standard_normal((trajectories, steps, points, channels)).astype(np.float32),
        "t": (0.1 * np.arange(steps) + 0.5).astype(np.float64),
    }


def write(path, fmt, keys, field_names=("u", "v")):
    """``keys`` and ``field_names`` (None: none) written as an HDF5 file or an (optionally compressed) .npz."""
    path = path.with_suffix(".h5" if fmt == "h5" else ".npz")
    if fmt == "h5":
        with h5py.File(path, "w") as file:
            for key, value in keys.items():
                file[key] = value
            if field_names is not None:
                file.attrs["field_names"] = list(field_names)
            file.attrs["note"] = "any other attribute is ignored"
    else:
        extra = {} if field_names is None else {"field_names": np.array(field_names)}
        (np.savez_compressed if fmt == "npz_compressed" else np.savez)(path, **keys, **extra)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_values_coordinates_and_times_read_back_as_written(tmp_path, fmt):
    written = arrays()
    path = write(tmp_path / "mesh", fmt, written)
    assert detect_layout(path) == "shared_mesh"
    source = open_source(path)
    assert isinstance(source, SharedMeshSource)
    assert source.num_trajectories == 3 and source.num_steps(2) == 4 and source.num_points(1) == 200
    assert source.field_spec == {"u": 1, "v": 1} and source.grid_shape is None and source.coord_dim == 2
    np.testing.assert_array_equal(source.coords(2).numpy(), written["coords"])
    np.testing.assert_array_equal(source.times(1).numpy(), written["t"])
    for traj, frames in [(0, [0]), (2, [1, 3]), (1, [3, 0, 3])]:
        got = source.frames(traj, frames)
        np.testing.assert_array_equal(got.numpy(), written["data"][traj, frames])
        got += 1.0  # tensors own their memory, even those read from a memory-mapped .npz
    if fmt == "npz":  # np.savez stores members uncompressed: mapped, not loaded
        assert isinstance(source._dataset("data"), np.memmap)
    copy = pickle.loads(pickle.dumps(source))  # as a spawned DataLoader worker gets it
    np.testing.assert_array_equal(copy.frames(1, [2]).numpy(), written["data"][1, [2]])
    validate_source(source)  # the once-per-file scan of train.py (validate_data_once)
    source.close()


@pytest.mark.parametrize("fmt", ["h5", "npz"])
def test_missing_field_names_give_c0_c1(tmp_path, fmt):
    source = open_source(write(tmp_path / "mesh", fmt, arrays(channels=3), field_names=None))
    assert source.field_names == ["c0", "c1", "c2"]


@pytest.mark.parametrize("fmt", ["h5", "npz"])
def test_mesh_datamodule_batches_hold_the_files_frames_and_points(tmp_path, fmt):
    written = arrays(trajectories=3, steps=4, points=150)
    path = write(tmp_path / "mesh", fmt, written)
    dm = MeshDataModule(path, batch_size=2, train_horizon=2, rollout_horizon=3, num_workers=0)
    dm.setup("fit")
    assert dm.field_names == ["u", "v"] and dm.coord_dim == 2
    assert dm.dt == pytest.approx(0.1)
    data = written["data"]
    flat = data[dm.train_trajectories].reshape(-1, 2).astype(np.float64)
    np.testing.assert_allclose(dm.stats["field_mean"].numpy(), flat.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dm.stats["coord_min"].numpy(), written["coords"].min(0))
    loaders = [dm.train_dataloader(), *dm.val_dataloader()]
    horizons = [2, 1, 3]
    for loader, horizon in zip(loaders, horizons):
        for batch in loader:
            assert batch["mask"].shape == (len(batch["traj"]), 150) and bool(batch["mask"].all())
            for row, (traj, t0) in enumerate(zip(batch["traj"].tolist(), batch["t0"].tolist())):
                np.testing.assert_array_equal(batch["fields"][row].numpy(), data[traj, t0])
                np.testing.assert_array_equal(
                    batch["targets"][row].numpy(), data[traj, t0 + 1 : t0 + 1 + horizon]
                )
                np.testing.assert_array_equal(batch["coords"][row].numpy(), written["coords"])
    dm.teardown()


def malformed():
    """(name, keys written, field names, key the message must name) of each malformed file."""
    good = arrays(trajectories=1, steps=3, points=20)
    coords_nan = good["coords"].copy()
    coords_nan[7, 1] = np.nan
    return [
        ("missing t", {k: v for k, v in good.items() if k != "t"}, ("u", "v"), r"lacks \['t'\].*add 't'"),
        ("missing coords", {k: v for k, v in good.items() if k != "coords"}, ("u", "v"), r"lacks \['coords'\]"),
        ("data rank", {**good, "data": good["data"][0]}, ("u", "v"), r"'data' has rank 3 .*expected rank 4"),
        ("coords rank", {**good, "coords": good["coords"][:, 0]}, ("u", "v"), r"'coords' has rank 1"),
        ("t rank", {**good, "t": good["t"][None]}, ("u", "v"), r"'t' has rank 2"),
        ("points", {**good, "coords": good["coords"][:-1]}, ("u", "v"), r"'data' .* 20 points but 'coords'"),
        ("channels", good, ("u", "v", "w"), r"field_names=\['u', 'v', 'w'\] must give 2 distinct names"),
        ("t length", {**good, "t": good["t"][:2]}, ("u", "v"), r"'t' has 2 entries but 'data'"),
        ("t order", {**good, "t": np.array([0.0, 0.2, 0.1])}, ("u", "v"), r"'t' does not increase strictly"),
        ("t repeat", {**good, "t": np.array([0.0, 0.1, 0.1])}, ("u", "v"), r"'t' does not increase strictly"),
        ("t nan", {**good, "t": np.array([0.0, np.nan, 0.1])}, ("u", "v"), r"'t' holds NaN or Inf"),
        ("coords nan", {**good, "coords": coords_nan}, ("u", "v"), r"'coords' holds 1 NaN or Inf.*point 7"),
        ("data dtype", {**good, "data": good["data"] > 0}, ("u", "v"), r"'data' has dtype bool"),
    ]


@pytest.mark.parametrize("fmt", ["h5", "npz"])
@pytest.mark.parametrize(("name", "keys", "names", "message"), malformed(), ids=[m[0] for m in malformed()])
def test_malformed_files_are_refused_at_open_naming_the_key(tmp_path, fmt, name, keys, names, message):
    path = write(tmp_path / "bad", fmt, keys, names)
    assert detect_layout(path) == "shared_mesh"
    with pytest.raises(DataError, match=message):
        open_source(path)


def test_a_corrupt_npz_and_an_unknown_h5_are_refused(tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="cannot be opened as a NumPy .npz archive"):
        open_source(broken)
    odd = tmp_path / "odd.h5"
    with h5py.File(odd, "w") as file:
        file["velocity"] = np.zeros(3)
    with pytest.raises(DataError, match=r"shared_mesh: root datasets 'coords'"):
        detect_layout(odd)
