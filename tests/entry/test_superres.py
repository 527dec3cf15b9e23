"""Zero-shot super-resolution reads a finer copy of the test split only, with the metrics of a whole copy."""

from __future__ import annotations

import h5py
import pytest
import torch

from helpers.entry import compose_train, tiny_overrides
from upt_lightning.data.generate import generate_dataset
from upt_lightning.errors import DataError
from upt_lightning.modules import OperatorModule
from upt_lightning.pipeline.run import build_datamodule
from upt_lightning.pipeline.stage1 import build_autoencoder
from upt_lightning.pipeline.superres import superres_metrics


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("superres")
    cfg = compose_train(tiny_overrides("burgers_upt", folder / "data"))
    datamodule = build_datamodule(cfg)
    torch.manual_seed(0)
    autoencoder = build_autoencoder(cfg, datamodule, "grid")
    model = OperatorModule(autoencoder=dict(autoencoder.hparams), freeze_autoencoder=False,
                           operator=dict(cfg.model.operator))
    model.normalizer.set_stats(datamodule.stats, dt=datamodule.dt)
    options = {**cfg.data.generate_options, "resolution": 16, "output_resolution": 32, "progress": False}
    return folder, cfg, datamodule, model, options


def _metrics(cfg, model, datamodule, path):
    cfg.data.superres.path = str(path)
    return superres_metrics(cfg, model, datamodule)


def test_the_test_split_copy_gives_the_metrics_of_a_whole_copy(setup):
    folder, cfg, datamodule, model, options = setup
    test_ids = list(datamodule.test_trajectories)
    assert 0 < len(test_ids) < options["num"]

    subset = folder / "fine_test_only.h5"
    from_subset = _metrics(cfg, model, datamodule, subset)  # missing: written with the test ids only
    with h5py.File(subset, "r") as f:
        assert list(f.attrs["trajectory_ids"]) == test_ids and len(f) == len(test_ids)

    whole = generate_dataset("burgers2d", folder / "fine_whole.h5", **options)  # as earlier versions wrote it
    from_whole = _metrics(cfg, model, datamodule, whole)
    assert from_subset["superres/grid"] == from_whole["superres/grid"] == "32x32"
    keys = [k for k in from_whole if k.startswith("superres/rollout_nrmse_h")]
    assert len(keys) == cfg.data.rollout_horizon and all(from_whole[k] > 0 for k in keys)
    for key in keys:
        assert from_subset[key] == pytest.approx(from_whole[key], rel=1e-5), key


def test_a_copy_of_other_trajectories_is_rewritten_if_ours_and_refused_otherwise(setup):
    folder, cfg, datamodule, model, options = setup
    test_ids = list(datamodule.test_trajectories)
    others = [t for t in range(options["num"]) if t not in test_ids][:2]
    ours = generate_dataset("burgers2d", folder / "fine_other_split.h5", trajectories=others, **options)
    reference = _metrics(cfg, model, datamodule, folder / "fine_reference.h5")
    assert _metrics(cfg, model, datamodule, ours) == reference
    with h5py.File(ours, "r") as f:
        assert list(f.attrs["trajectory_ids"]) == test_ids

    foreign = generate_dataset("burgers2d", folder / "fine_foreign.h5", trajectories=others, **options)
    with h5py.File(foreign, "a") as f:
        del f.attrs["generator"]  # a user's own file: never overwritten
    before = foreign.read_bytes()
    with pytest.raises(DataError, match="lacks some test trajectories"):
        _metrics(cfg, model, datamodule, foreign)
    assert foreign.read_bytes() == before


def test_a_copy_on_another_grid_is_refused_by_name(setup):
    folder, cfg, datamodule, model, options = setup
    coarser = generate_dataset("burgers2d", folder / "fine_x3.h5", **{**options, "output_resolution": 48})
    with pytest.raises(DataError, match=r"holds a \(48, 48\) grid, but super-resolution by data.superres.factor=2 "
                                        r"needs \(32, 32\)"):
        _metrics(cfg, model, datamodule, coarser)
