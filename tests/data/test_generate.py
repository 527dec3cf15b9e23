"""HDF5 writers, generate_dataset and its command line, read back with plain h5py."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from upt_lightning.data.generate import DATASETS, default_filename, generate_dataset, main
from upt_lightning.data.writers import MeshWriter, PDEBench1DWriter, PDEBench2DWriter

SMALL_2D = {"resolution": 16, "num_steps": 4}


@pytest.fixture(autouse=True)
def _single_thread():
    """These problems are tiny: a second thread only adds synchronisation per FFT, which costs
    whole scheduler slices when other processes keep the cores busy."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def read_2d(path) -> np.ndarray:
    """All trajectories of a PDEBench 2D file, (N, T, X, Y, C)."""
    with h5py.File(path, "r") as f:
        return np.stack([f[key]["data"][()] for key in sorted(f)])


def trig_interpolate(grid: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trigonometric interpolant of cell-centred samples ``grid`` (..., N, N) at ``points`` (P, 2),
    by the direct double sum over all non-Nyquist modes: a reference independent of the library."""
    n = grid.shape[-1]
    spectrum = np.fft.fft2(grid) / n**2
    k = np.fft.fftfreq(n, 1 / n)
    keep = np.abs(k) < n / 2
    spectrum, k = spectrum[..., keep, :][..., keep], k[keep]
    ex = np.exp(2j * np.pi * np.outer(points[:, 0] - 0.5 / n, k))  # (P, K)
    ey = np.exp(2j * np.pi * np.outer(points[:, 1] - 0.5 / n, k))
    return np.einsum("pk,...kl,pl->...p", ex, spectrum, ey).real


# ------------------------------------------------------------------------------- writers


def test_writers_produce_the_documented_layouts(tmp_path):
    x, t = np.linspace(0, 1, 8, endpoint=False), np.arange(3) * 0.5
    u = np.arange(2 * 3 * 8, dtype=np.float64).reshape(2, 3, 8)
    with PDEBench1DWriter(tmp_path / "a.h5", num=2, x=x, t=t, nu=0.01, attrs={"seed": 4}) as writer:
        writer.append(torch.from_numpy(u[:1]))
        writer.append(u[1:])
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert set(f) == {"tensor", "x-coordinate", "t-coordinate"}
        assert f["tensor"].dtype == np.float32 and f["tensor"].shape == (2, 3, 8)
        np.testing.assert_array_equal(f["tensor"][()], u.astype(np.float32))
        np.testing.assert_array_equal(f["x-coordinate"][()], x.astype(np.float32))
        assert f["t-coordinate"].shape == (3,) and f.attrs["Nu"] == 0.01 and f.attrs["seed"] == 4

    y = np.linspace(0, 1, 5, endpoint=False)
    data = np.random.default_rng(0).normal(size=(3, 3, 8, 5, 2))
    with PDEBench2DWriter(tmp_path / "b.h5", num=3, x=x, y=y, t=t, field_names=["u", "v"]) as writer:
        writer.append(data)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert sorted(f) == ["0000", "0001", "0002"] and list(f.attrs["field_names"]) == ["u", "v"]
        assert set(f["0001"]) == {"data", "grid"} and set(f["0001/grid"]) == {"x", "y", "t"}
        assert f["0001/data"].dtype == np.float32
        np.testing.assert_array_equal(f["0002/data"][()], data[2].astype(np.float32))
        assert f["0000/grid/x"].shape == (8,) and f["0000/grid/y"].shape == (5,) and f["0000/grid/t"].shape == (3,)

    with MeshWriter(tmp_path / "c.h5", num=2, field_names=["u", "v"]) as writer:
        for count in (4, 6):
            writer.append(np.full((count, 2), 0.25), np.full((3, count, 2), float(count)), t)
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert f.attrs["layout"] == "upt_mesh" and list(f.attrs["field_names"]) == ["u", "v"]
        assert f["0001/coords"].shape == (6, 2) and f["0001/data"].shape == (3, 6, 2)
        assert f["0000/data"][0, 0, 0] == 4.0 and f["0001/t"].dtype == np.float32


def test_interrupted_or_incomplete_writes_leave_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "d.h5"
    target.write_bytes(b"previous complete file")
    x = t = np.zeros(2)
    with pytest.raises(RuntimeError, match="interrupted"):
        with PDEBench1DWriter(target, num=2, x=x, t=t, nu=0.1) as writer:
            writer.append(np.zeros((1, 2, 2)))
            raise RuntimeError("interrupted")
    with pytest.raises(ValueError, match="only 1 of 2 trajectories"):
        with PDEBench1DWriter(target, num=2, x=x, t=t, nu=0.1) as writer:
            writer.append(np.zeros((1, 2, 2)))
    assert target.read_bytes() == b"previous complete file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]


def test_writers_reject_bad_data(tmp_path):
    x = t = np.zeros(2)
    with PDEBench1DWriter(tmp_path / "e.h5", num=1, x=x, t=t, nu=0.1) as writer:
        with pytest.raises(ValueError, match="NaN or Inf"):
            writer.append(np.full((1, 2, 2), np.nan))
        with pytest.raises(ValueError, match=r"shape \(3, 2\), expected \(2, 2\)"):
            writer.append(np.zeros((1, 3, 2)))
        with pytest.raises(ValueError, match="exceed the announced 1"):
            writer.append(np.zeros((2, 2, 2)))
        writer.append(np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match=r"data has shape \(2, 3, 2\), expected \(2, 4, 2\)"):
        with MeshWriter(tmp_path / "f.h5", num=1, field_names=["u", "v"]) as writer:
            writer.append(np.zeros((4, 2)), np.zeros((2, 3, 2)), t)


# ------------------------------------------------------------------------- generate_dataset


def test_burgers2d_file_has_pdebench_layout_and_normalised_initial_fields(tmp_path):
    path = generate_dataset("burgers2d", tmp_path / "g.h5", num=2, seed=3, progress=False, **SMALL_2D)
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["0000", "0001"]
        assert f["0000/data"].shape == (4, 16, 16, 2) and f["0000/data"].dtype == np.float32
        np.testing.assert_allclose(f["0000/grid/x"][()], (np.arange(16) + 0.5) / 16)
        np.testing.assert_allclose(f["0000/grid/t"][()], 0.05 * np.arange(4), atol=1e-7)
        assert list(f.attrs["field_names"]) == ["u", "v"]
        assert f.attrs["nu"] == DATASETS["burgers2d"].defaults["nu"] and f.attrs["seed"] == 3
        assert f.attrs["resolution"] == 16
    data = read_2d(path)
    np.testing.assert_allclose(np.abs(data[:, 0]).max(axis=(1, 2, 3)), 0.5, rtol=1e-6)
    assert (np.abs(data[:, -1] - data[:, 0]).max(axis=(1, 2, 3)) > 0.05).all()


def test_fine_grid_copy_equals_coarse_data_at_shared_points_and_is_band_limited(tmp_path):
    coarse = read_2d(generate_dataset("burgers2d", tmp_path / "c.h5", num=2, progress=False, **SMALL_2D))
    fine = read_2d(generate_dataset(
        "burgers2d", tmp_path / "f.h5", num=2, progress=False, output_resolution=48, **SMALL_2D
    ))
    assert fine.shape == (2, 4, 48, 48, 2)
    # Cell centres (i + 0.5)/16 coincide with (3i + 1 + 0.5)/48.
    np.testing.assert_allclose(fine[:, :, 1::3, 1::3], coarse, atol=1e-6)
    # Smooth: no content above the solver's 2/3 cut-off (wavenumber 5 on 16 points).
    spectrum = np.abs(np.fft.fft2(fine, axes=(2, 3)))
    k = np.abs(np.fft.fftfreq(48, 1 / 48))
    high = (k[:, None] > 5) | (k[None, :] > 5)
    assert spectrum[:, :, high].max() < 1e-6 * spectrum.max()


def test_mesh_values_are_the_exact_series_at_each_trajectorys_own_points(tmp_path):
    options = {**SMALL_2D, "min_points": 40, "max_points": 90}
    mesh = generate_dataset("burgers2d_mesh", tmp_path / "m.h5", num=3, seed=5, progress=False, **options)
    grid = read_2d(generate_dataset("burgers2d", tmp_path / "g.h5", num=3, seed=5, progress=False, **SMALL_2D))
    with h5py.File(mesh, "r") as f:
        counts = [f[key]["coords"].shape[0] for key in sorted(f)]
        assert all(40 <= c <= 90 for c in counts) and len(set(counts)) > 1
        for i, key in enumerate(sorted(f)):
            coords, data = f[key]["coords"][()], f[key]["data"][()]
            assert coords.dtype == np.float32 and (coords >= 0).all() and (coords < 1).all()
            assert data.shape == (4, counts[i], 2)
            # Same seed, same initial conditions: the mesh values are the grid solution's series.
            reference = trig_interpolate(np.moveaxis(grid[i], -1, 1).astype(np.float64), coords.astype(np.float64))
            np.testing.assert_allclose(data, np.moveaxis(reference, 1, -1), atol=1e-6)


def test_same_seed_gives_identical_data_whatever_the_batch_size(tmp_path):
    first = read_2d(generate_dataset("burgers2d", tmp_path / "1.h5", num=3, seed=7, progress=False, **SMALL_2D))
    again = read_2d(generate_dataset(
        "burgers2d", tmp_path / "2.h5", num=3, seed=7, progress=False, batch_size=2, **SMALL_2D
    ))
    other = read_2d(generate_dataset("burgers2d", tmp_path / "3.h5", num=3, seed=8, progress=False, **SMALL_2D))
    np.testing.assert_allclose(first, again, rtol=0, atol=1e-7)
    assert np.abs(first - other).max() > 0.1


def test_same_seed_gives_the_same_mesh_points(tmp_path):
    options = {**SMALL_2D, "min_points": 20, "max_points": 40, "progress": False}
    files = [generate_dataset("burgers2d_mesh", tmp_path / f"{i}.h5", num=2, seed=s, **options)
             for i, s in enumerate((4, 4, 5))]
    coords = []
    for path in files:
        with h5py.File(path, "r") as f:
            coords.append([f[key]["coords"][()] for key in sorted(f)])
    assert all(np.array_equal(a, b) for a, b in zip(coords[0], coords[1]))
    assert not any(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(coords[0], coords[2]))


@pytest.mark.parametrize(
    "name, options",
    [("burgers2d", {**SMALL_2D, "output_resolution": 32}), ("burgers1d", {"resolution": 64, "num_steps": 5})],
)
def test_some_trajectories_are_written_with_their_values_in_the_whole_set(tmp_path, name, options):
    whole = generate_dataset(name, tmp_path / "whole.h5", num=5, seed=3, progress=False, batch_size=2, **options)
    part = generate_dataset(name, tmp_path / "part.h5", num=5, seed=3, progress=False, batch_size=2,
                            trajectories=[4, 1], **options)
    read = read_2d if name == "burgers2d" else (lambda path: h5py.File(path, "r")["tensor"][()])
    # Sorted ids. Solved in other batches ([1, 4] together), which may differ by rounding only.
    np.testing.assert_allclose(read(part), read(whole)[[1, 4]], rtol=0, atol=1e-7)
    with h5py.File(part, "r") as f:
        assert list(f.attrs["trajectory_ids"]) == [1, 4] and f.attrs["num_in_set"] == 5
    with h5py.File(whole, "r") as f:
        assert "trajectory_ids" not in f.attrs


@pytest.mark.parametrize(
    "name, trajectories, message",
    [
        ("burgers2d", [0, 5], r"trajectories must be ids in \[0, 5\)"),
        ("burgers2d", [], r"trajectories must be ids in \[0, 5\)"),
        ("burgers2d_mesh", [0], "burgers2d_mesh cannot be written for some trajectories only"),
    ],
)
def test_bad_trajectory_subsets_raise_before_any_work(tmp_path, name, trajectories, message):
    with pytest.raises(ValueError, match=message):
        generate_dataset(name, tmp_path / "x.h5", num=5, progress=False, trajectories=trajectories, **SMALL_2D)
    assert not (tmp_path / "x.h5").exists()


def test_burgers1d_file_has_pdebench_layout(tmp_path):
    path = generate_dataset("burgers1d", tmp_path / "b.h5", num=3, progress=False, resolution=64, num_steps=5)
    with h5py.File(path, "r") as f:
        assert set(f) == {"tensor", "x-coordinate", "t-coordinate"}
        assert f["tensor"].shape == (3, 5, 64) and f["tensor"].dtype == np.float32
        np.testing.assert_allclose(f["x-coordinate"][()], (np.arange(64) + 0.5) / 64)
        np.testing.assert_allclose(f["t-coordinate"][()], 0.01 * np.arange(5), atol=1e-7)
        assert f.attrs["Nu"] == 0.01 and "nu" not in f.attrs
        u = f["tensor"][()]
    assert np.abs(u[:, 0]).max() <= 2.0
    energy = np.square(u.astype(np.float64)).sum(-1)
    assert (np.diff(energy, axis=1) <= 1e-6 * energy[:, :1]).all()


def test_default_filenames_name_the_grid_and_non_default_options():
    assert default_filename("burgers2d") == "burgers2d_64.h5"
    assert default_filename("burgers2d", output_resolution=128) == "burgers2d_128.h5"
    assert default_filename("burgers2d", nu=0.02, batch_size=4) == "burgers2d_64_nu0.02.h5"
    assert default_filename("burgers1d") == "burgers1d_1024.h5"
    assert default_filename("burgers2d_mesh", resolution=32) == "burgers2d_mesh_resolution32.h5"
    assert default_filename("ns2d") == "ns2d_64.h5"
    assert set(DATASETS) == {"burgers1d", "burgers2d", "burgers2d_mesh", "ns2d"}


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("burgers3d", {}, "unknown data set 'burgers3d'; choose one of burgers1d, burgers2d, burgers2d_mesh, ns2d"),
        ("burgers2d", {"min_points": 5}, r"unknown option\(s\) \['min_points'\] for burgers2d; valid options: res"),
        ("burgers2d", {"resolution": 16, "output_resolution": 40}, "must be a multiple of resolution 16"),
        ("burgers2d", {"resolution": 8}, "use resolution >= 10"),
        ("burgers2d", {"resolution": 16.5}, "resolution must be an integer"),
        ("burgers2d", {"nu": -1.0}, "nu must be positive"),
        ("burgers2d_mesh", {"min_points": 50, "max_points": 10}, "min_points 50 exceeds max_points 10"),
        ("burgers2d", {"num": 0}, "num .* must be a positive integer"),
        ("burgers2d", {"seed": 1.5}, "seed must be a non-negative integer"),
    ],
)
def test_bad_names_and_options_raise_clear_errors(tmp_path, name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_dataset(name, tmp_path / "x.h5", progress=False, **kwargs)
    assert not (tmp_path / "x.h5").exists()


# ----------------------------------------------------------------------------- command line


def test_command_line_writes_the_file_and_reports_it(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "upt_lightning.data.generate", "burgers2d", "--out", str(out), "--num", "2",
         "--resolution", "16", "--num-steps", "3", "--seed", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    path = out / "burgers2d_16_resolution16_num_steps3.h5"
    assert str(path) in result.stdout and "MiB" in result.stdout
    assert read_2d(path).shape == (2, 3, 16, 16, 2)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["burgers3d"], "invalid choice: 'burgers3d'"),
        (["burgers2d", "--resolution", "16", "--output-resolution", "20"],
         "output_resolution 20 must be a multiple of resolution 16"),
        (["burgers2d_mesh", "--output-resolution", "128"], r"unknown option(s) ['output_resolution'] for burgers2d_mesh"),
        (["burgers2d", "--num", "0"], "num (trajectories) must be a positive integer, got 0"),
    ],
)
def test_command_line_turns_bad_arguments_into_a_message_and_exit_code_2(tmp_path, capsys, argv, message):
    # argparse's exit is a SystemExit, which Python reports without a traceback.
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


SMALL_NS = {"resolution": 16, "num_steps": 4, "dt_out": 1.0, "max_wavenumber": 4, "substeps": 8}


def test_ns2d_file_is_a_vorticity_channel_in_the_pdebench_layout_seeded_and_batch_independent(tmp_path):
    path = generate_dataset("ns2d", tmp_path / "ns.h5", num=3, seed=2, progress=False, **SMALL_NS)
    with h5py.File(path, "r") as f:
        assert list(f.attrs["field_names"]) == ["w"] and f.attrs["dataset"] == "ns2d"
        assert f.attrs["nu"] == DATASETS["ns2d"].defaults["nu"] and f.attrs["substeps"] == 8
        np.testing.assert_allclose(f["0000"]["grid"]["t"][()], [0.0, 1.0, 2.0, 3.0])
    data = read_2d(path)
    assert data.shape == (3, 4, 16, 16, 1)
    assert np.abs(data.mean(axis=(2, 3))).max() < 1e-6  # zero mean vorticity
    assert (np.abs(data[:, -1] - data[:, 0]).max(axis=(1, 2, 3)) > 0.05).all()  # it moves
    again = read_2d(generate_dataset("ns2d", tmp_path / "again.h5", num=3, seed=2, progress=False, batch_size=1,
                                     **SMALL_NS))
    np.testing.assert_allclose(again, data, rtol=0, atol=1e-7)
    part = read_2d(generate_dataset("ns2d", tmp_path / "part.h5", num=3, seed=2, progress=False,
                                    trajectories=[2], **SMALL_NS))
    np.testing.assert_allclose(part, data[[2]], rtol=0, atol=1e-7)
    fine = read_2d(generate_dataset("ns2d", tmp_path / "fine.h5", num=3, seed=2, progress=False,
                                    output_resolution=48, **SMALL_NS))
    np.testing.assert_allclose(fine[:, :, 1::3, 1::3], data, atol=1e-6)  # the same solution, finer grid
