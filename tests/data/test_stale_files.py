"""A generated file is reused only for the settings it was generated with: another request is refused by name
(the coarse data file) or written again (the derived finer super-resolution copy), never read silently."""

from __future__ import annotations

import logging
import shutil

import h5py
import pytest
import torch

from upt_lightning.data.datamodules import GridDataModule
from upt_lightning.errors import DataError
from upt_lightning.pipeline.superres import finer_copy

TINY = {"resolution": 16, "num": 4, "num_steps": 5, "seed": 0, "progress": False}


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny FFTs: a second thread only adds synchronisation."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A burgers2d file of 4 trajectories of 5 frames on 16x16, written by prepare_data."""
    path = tmp_path_factory.mktemp("stale") / "burgers2d_r16_n4.h5"
    GridDataModule(path, generate="burgers2d", generate_options=TINY).prepare_data()
    return path


def prepare(path, **changes):
    """prepare_data of a module asking for the TINY settings with ``changes``."""
    GridDataModule(path, generate=changes.pop("generate", "burgers2d"),
                   generate_options={**TINY, **changes}).prepare_data()


def copy(generated, tmp_path, edit):
    """A copy of the generated file whose root attributes ``edit`` changes."""
    path = shutil.copy(generated, tmp_path / generated.name)
    with h5py.File(path, "a") as file:
        edit(file.attrs)
    return path


def test_a_generated_file_records_every_setting_including_the_trajectory_count(generated):
    with h5py.File(generated, "r") as file:
        assert file.attrs["num"] == 4 and file.attrs["num_steps"] == 5 and file.attrs["seed"] == 0
        assert file.attrs["dataset"] == "burgers2d" and file.attrs["output_resolution"] == 16
        assert "batch_size" not in file.attrs


def test_other_time_steps_refuse_the_old_file_naming_both_values_and_the_fix(generated):
    written = generated.stat().st_mtime_ns
    with pytest.raises(DataError) as error:
        prepare(generated, num_steps=8)
    message = str(error.value)
    assert str(generated) in message and "num_steps 5 in the file, 8 requested" in message
    assert "delete the file" in message and "data.path" in message
    assert generated.stat().st_mtime_ns == written


@pytest.mark.parametrize("changes, difference", [
    ({"seed": 1}, "seed 0 in the file, 1 requested"),
    ({"num": 6}, "num 4 in the file, 6 requested"),
    ({"nu": 0.02}, "nu 0.015 in the file, 0.02 requested"),
    ({"generate": "ns2d", "max_wavenumber": 3},
     "dataset 'burgers2d' in the file, 'ns2d' requested; dt_out 0.05 in the file, 1.0 requested"),
])
def test_each_other_setting_is_named(generated, changes, difference):
    with pytest.raises(DataError, match=r"generated with other settings") as error:
        prepare(generated, **changes)
    assert difference in str(error.value)


def test_the_same_settings_reuse_the_file_untouched(generated):
    written = generated.stat().st_mtime_ns
    # batch_size changes nothing in the file; a float within rounding and an explicit default are the same.
    prepare(generated, batch_size=3, nu=0.015 * (1 + 1e-9), dt_out=0.05)
    assert generated.stat().st_mtime_ns == written


def test_a_file_written_before_the_count_was_recorded_is_counted(generated, tmp_path):
    path = copy(generated, tmp_path, lambda attrs: attrs.pop("num"))
    prepare(path)
    with pytest.raises(DataError, match="num 4 in the file, 6 requested"):
        prepare(path, num=6)


def test_a_users_own_file_is_never_compared(generated, tmp_path):
    path = copy(generated, tmp_path, lambda attrs: attrs.pop("generator"))
    prepare(path, num_steps=8)  # not ours: the user named it
    GridDataModule(generated).prepare_data()  # no generate: nothing requested, nothing compared


def test_a_stale_finer_copy_is_written_again_and_a_current_one_reused(tmp_path, caplog):
    options = {**TINY, "output_resolution": 32}
    path = tmp_path / "fine.h5"
    assert finer_copy(path, "burgers2d", options, [1, 3]) == [0, 1]
    written = path.stat().st_mtime_ns
    assert finer_copy(path, "burgers2d", options, [3]) == [1]
    assert path.stat().st_mtime_ns == written

    with caplog.at_level(logging.INFO, logger="upt_lightning.pipeline"):
        assert finer_copy(path, "burgers2d", {**options, "num_steps": 6}, [1, 3]) == [0, 1]
    assert "(num_steps 5 in the file, 6 requested): writing it again" in caplog.text
    with h5py.File(path, "r") as file:
        assert file.attrs["num_steps"] == 6 and file["0000/data"].shape == (6, 32, 32, 2)


def test_a_users_finer_copy_is_read_whatever_it_records(tmp_path):
    path = tmp_path / "fine.h5"
    finer_copy(path, "burgers2d", {**TINY, "output_resolution": 32}, [1, 3])
    with h5py.File(path, "a") as file:
        del file.attrs["generator"]
    before = path.read_bytes()
    assert finer_copy(path, "burgers2d", {**TINY, "output_resolution": 32, "num_steps": 6}, [3]) == [1]
    assert path.read_bytes() == before


def test_a_finer_copy_on_another_grid_is_left_to_the_grid_check(tmp_path):
    path = tmp_path / "fine.h5"
    finer_copy(path, "burgers2d", {**TINY, "output_resolution": 48}, [1, 3])
    before = path.read_bytes()
    # superres_metrics then refuses it by data.superres.factor (tests/entry/test_superres.py).
    assert finer_copy(path, "burgers2d", {**TINY, "output_resolution": 32}, [1, 3]) == [0, 1]
    assert path.read_bytes() == before
