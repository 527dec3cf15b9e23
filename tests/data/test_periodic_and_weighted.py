"""A periodic domain (``period``: coordinates, the decoder's flag) and frame-weighted training windows."""

from __future__ import annotations

import logging
from collections import Counter

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from upt_lightning.data import MultiDataModule
from upt_lightning.data.datamodules import GridDataModule
from upt_lightning.data.writers import PDEBench2DWriter
from upt_lightning.errors import ConfigError, DataError
from upt_lightning.modules import AutoencoderModule
from upt_lightning.models.normalizer import FieldNormalizer
from upt_lightning.pipeline.config_checks import check_against_data
from upt_lightning.pipeline.stage1 import decoder_settings
from helpers.entry import compose_train

STEPS = 6  # frames per trajectory: next-step windows start at frames 0 to 4


def write_grid(path, trajectories=10, size=8, spacing=0.25, origin=-1.0):
    """A PDEBench 2D file on a ``size`` x ``size`` grid with points ``origin + i * spacing``."""
    rng = np.random.default_rng(0)
    axis = origin + spacing * np.arange(size)
    with PDEBench2DWriter(path, num=trajectories, x=axis, y=axis, t=np.arange(STEPS) * 0.1,
                          field_names=["u"]) as writer:
        writer.append(rng.normal(size=(trajectories, STEPS, size, size, 1)))
    return axis


def make(path, **kwargs):
    dm = GridDataModule(path, rollout_horizon=3, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_a_period_maps_one_period_onto_the_unit_square_with_the_grid_points_cell_centred(tmp_path):
    write_grid(tmp_path / "a.h5")  # 8 points per axis from -1 to 0.75: a period of 2
    plain, periodic = make(tmp_path / "a.h5"), make(tmp_path / "a.h5", period=2.0)
    assert plain.period is None and periodic.period == (2.0, 2.0)
    torch.testing.assert_close(plain.stats["coord_max"] - plain.stats["coord_min"], torch.tensor([1.75, 1.75]))
    torch.testing.assert_close(periodic.stats["coord_min"], torch.tensor([-1.125, -1.125]))
    torch.testing.assert_close(periodic.stats["coord_max"], torch.tensor([0.875, 0.875]))
    normalizer = FieldNormalizer(1, 2)
    normalizer.set_stats(periodic.stats)
    coords = normalizer.normalize_coords(periodic.source.coords(0))
    centres = (torch.arange(8) + 0.5) / 8
    torch.testing.assert_close(coords.reshape(8, 8, 2)[:, 0, 0], centres)
    torch.testing.assert_close(coords.reshape(8, 8, 2)[0, :, 1], centres)
    # One period further is the same point: exactly 1 apart after normalisation.
    shifted = normalizer.normalize_coords(periodic.source.coords(0) + 2.0)
    torch.testing.assert_close(shifted - coords, torch.ones_like(coords))


@pytest.mark.parametrize("period, match", [(-1.0, "positive"), (float("nan"), "positive"), ("one", "positive"),
                                           (True, "positive"), ([], "positive")])
def test_impossible_periods_are_refused_when_the_module_is_built(tmp_path, period, match):
    with pytest.raises(ValueError, match=match):
        GridDataModule(tmp_path / "a.h5", period=period)


@pytest.mark.parametrize("period, match", [(1.75, "not longer than the points' extent"),
                                           ([2.0, 2.0, 2.0], "3 entries but")])
def test_a_period_that_does_not_fit_the_points_is_a_data_error(tmp_path, period, match):
    write_grid(tmp_path / "a.h5")
    with pytest.raises(DataError, match=match):
        make(tmp_path / "a.h5", period=period)


def test_per_axis_periods_apply_to_their_own_axis(tmp_path):
    write_grid(tmp_path / "a.h5")
    stats = make(tmp_path / "a.h5", period=[2.0, 4.0]).stats
    torch.testing.assert_close(stats["coord_max"] - stats["coord_min"], torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(stats["coord_min"], torch.tensor([-1.125, -2.125]))


@pytest.mark.parametrize("period, warned", [(0.94, ["x", "y"]), ([1.0, 1.5], ["y"]), (1.0, []), (None, [])])
def test_a_period_the_grid_spacing_does_not_imply_is_warned_about(tmp_path, caplog, period, warned):
    write_grid(tmp_path / "a.h5", size=16, spacing=1 / 16, origin=0.5 / 16)  # cell centres of [0, 1): period 1
    with caplog.at_level(logging.WARNING, logger="upt_lightning.data"):
        make(tmp_path / "a.h5", period=period)
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data.period=")]
    assert [message.split("its ")[1][0] for message in messages] == warned
    given = period if isinstance(period, float) else 1.5
    for message in messages:
        assert f"data.period={period}" in message and "a.h5" in message
        assert f"16 points 0.0625 apart, a period of 1, not {given:g}" in message


def test_the_decoder_is_periodic_when_the_data_are_and_a_periodic_decoder_needs_periodic_data(tmp_path):
    write_grid(tmp_path / "a.h5")
    cfg = OmegaConf.create({"model": {"decoder": {"dim": 16}}})
    assert decoder_settings(cfg, make(tmp_path / "a.h5", period=2.0)) == {"dim": 16, "periodic": True}
    assert decoder_settings(cfg, make(tmp_path / "a.h5")) == {"dim": 16, "periodic": False}
    forced_off = OmegaConf.create({"model": {"decoder": {"dim": 16, "periodic": False}}})
    assert decoder_settings(forced_off, make(tmp_path / "a.h5", period=2.0))["periodic"] is False
    forced_on = OmegaConf.create({"model": {"decoder": {"dim": 16, "periodic": True}}})
    with pytest.raises(ConfigError, match="data.period is not set"):
        decoder_settings(forced_on, make(tmp_path / "a.h5"))


def first_frames_drawn(dm, epochs):
    counts = Counter()
    for _ in range(epochs):
        for batch in dm.train_dataloader():
            counts.update(batch["t0"].tolist())
    return counts


def test_frame_weight_power_draws_early_windows_more_often_in_proportion(tmp_path):
    write_grid(tmp_path / "a.h5")  # 8 training trajectories x 5 windows
    torch.manual_seed(0)
    uniform = first_frames_drawn(make(tmp_path / "a.h5", batch_size=8), epochs=5)
    assert uniform == {t: 8 * 5 for t in range(5)}  # every window once per epoch
    torch.manual_seed(0)
    weighted = first_frames_drawn(make(tmp_path / "a.h5", batch_size=8, frame_weight_power=1.0), epochs=100)
    assert sum(weighted.values()) == 40 * 100  # an epoch still has as many windows as the split
    expected = np.array([1 / (t + 1) for t in range(5)])
    expected /= expected.sum()
    drawn = np.array([weighted[t] for t in range(5)]) / 4000
    np.testing.assert_allclose(drawn, expected, atol=0.025)
    assert weighted[0] > 3 * weighted[4]


def test_impossible_frame_weight_powers_are_refused(tmp_path):
    for power in (-0.5, float("inf"), "half"):
        with pytest.raises(ValueError, match="frame_weight_power"):
            GridDataModule(tmp_path / "a.h5", frame_weight_power=power)


def test_several_datasets_refuse_frame_weights_they_would_not_use(tmp_path):
    write_grid(tmp_path / "a.h5")
    datasets = {"a": {"path": str(tmp_path / "a.h5"), "frame_weight_power": 0.5}}
    with pytest.raises(ConfigError, match="frame_weight_power"):
        MultiDataModule(datasets)
    with pytest.raises(ConfigError, match=r"^data\.frame_weight_power is set"):
        MultiDataModule({"a": {"path": str(tmp_path / "a.h5")}}, frame_weight_power=0.5)
    assert MultiDataModule({"a": {"path": str(tmp_path / "a.h5")}}, frame_weight_power=0.0).names == ["a"]


def test_a_periodic_decoder_trains_on_periodic_data_and_refuses_data_without_a_period(tmp_path):
    write_grid(tmp_path / "a.h5")

    def fit(**data):
        model = AutoencoderModule(
            field_channels={"u": 1}, coord_dim=2, grid_shape=(8, 8), latent_tokens=16, latent_dim=8,
            encoder={"kind": "grid", "patch_size": 2, "dim": 16, "depth": 1, "num_heads": 2, "pooling": "patch"},
            decoder={"dim": 16, "depth": 1, "num_heads": 2, "num_frequencies": 3, "periodic": True},
        )
        trainer = pl.Trainer(fast_dev_run=True, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
        trainer.fit(model, datamodule=GridDataModule(tmp_path / "a.h5", rollout_horizon=3, batch_size=4, **data))
        return trainer

    with pytest.raises(ValueError, match="the data give no period"):
        fit()
    assert torch.isfinite(fit(period=2.0).callback_metrics["train/loss"])


@pytest.mark.parametrize("frequencies, warns", [(5, False), (6, True)])
def test_a_decoder_feature_at_the_grids_nyquist_wavenumber_is_warned_about(caplog, frequencies, warns):
    cfg = compose_train(["+experiment=burgers_upt", f"model.decoder.num_frequencies={frequencies}"])
    with caplog.at_level(logging.WARNING, logger="upt_lightning.pipeline"):
        check_against_data(cfg, (64, 64))
    warned = [r.getMessage() for r in caplog.records if "Nyquist" in r.getMessage()]
    assert bool(warned) == warns
    if warns:
        assert "wavenumber 32" in warned[0] and "num_frequencies <= 5" in warned[0]
