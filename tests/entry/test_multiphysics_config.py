"""The multi-dataset data group: shared window settings handed to every dataset, per-grid patch sizes for one
latent layout, and settings that one dataset cannot serve refused before training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from helpers.entry import compose_train, multi_datamodule_of as datamodule_of, run_train
from upt_lightning.data import GridDataModule
from upt_lightning.data.writers import PDEBench2DWriter
from upt_lightning.errors import CheckpointError, ConfigError
from upt_lightning.pipeline.checkpoint_checks import check_autoencoder_ckpt
from upt_lightning.pipeline.data_settings import datamodule_settings
from upt_lightning.pipeline.multi_data import check_multi_against_data, dataset_architectures
from upt_lightning.pipeline.stage1 import build_autoencoder


def write(path, size, names):
    x = np.linspace(0, 1, size, endpoint=False)
    data = np.random.default_rng(size).normal(size=(10, 4, size, size, len(names))).astype(np.float32)
    with PDEBench2DWriter(path, num=10, x=x, y=x, t=np.arange(4) * 0.1, field_names=names) as writer:
        writer.append(data)
    return str(path)


@pytest.fixture()
def two_files(tmp_path):
    return {"burgers": write(tmp_path / "b.h5", 32, ["u", "v"]), "ns2d": write(tmp_path / "n.h5", 16, ["w"])}


def compose(two_files, *overrides):
    return compose_train([
        "+experiment=multiphysics_upt", f"data.datasets.burgers.path={two_files['burgers']}",
        f"data.datasets.ns2d.path={two_files['ns2d']}", "data.rollout_horizon=3", "objective=val/rollout_nrmse_h3",
        *overrides,
    ])


def test_shared_window_settings_reach_every_dataset_and_evaluation_entries_do_not(two_files):
    cfg = compose(two_files, "data.train_horizon=2", "data.split=[0.6,0.2,0.2]")
    settings = datamodule_settings(cfg)
    for child in settings["datasets"].values():
        # The top of the group wins over each dataset's own data group (burgers2d.yaml says rollout_horizon 10).
        assert child["rollout_horizon"] == 3 and child["train_horizon"] == 2 and child["split"] == [0.6, 0.2, 0.2]
        assert "superres" not in child and "conservation" not in child
    assert "rollout_horizon" not in settings
    dm = datamodule_of(cfg)
    assert [len(child.test_trajectories) for child in dm.children.values()] == [2, 2]


def test_each_grid_gets_the_patch_size_of_the_shared_token_layout(two_files):
    cfg = compose(two_files, "model.latent_tokens=16")
    datasets = dataset_architectures(cfg, datamodule_of(cfg))
    assert datasets["burgers"] == {"field_channels": {"u": 1, "v": 1}, "grid_shape": [32, 32],
                                   "encoder": {"patch_size": [8, 8]}}
    assert datasets["ns2d"]["encoder"] == {"patch_size": [4, 4]} and datasets["ns2d"]["field_channels"] == {"w": 1}


def test_settings_one_dataset_cannot_serve_are_refused(two_files):
    cfg = compose(two_files, "model.latent_tokens=9")  # a 3x3 layout cuts neither 32 nor 16
    with pytest.raises(ConfigError, match="cannot be cut into the \\(3, 3\\) patches"):
        check_multi_against_data(cfg, datamodule_of(cfg))
    cfg = compose(two_files, "~data.datasets.ns2d.conservation", "loss.lambda_conservation=0.01")
    with pytest.raises(ConfigError, match="every dataset to declare"):
        check_multi_against_data(cfg, datamodule_of(cfg))
    cfg = compose(two_files, "stage2.latent_cache=true")
    with pytest.raises(ConfigError, match="latent_cache"):
        check_multi_against_data(cfg, datamodule_of(cfg))


def test_train_py_reports_the_bad_setting_without_training(two_files, tmp_path):
    result = run_train([
        "+experiment=multiphysics_upt", f"data.datasets.burgers.path={two_files['burgers']}",
        f"data.datasets.ns2d.path={two_files['ns2d']}", "data.rollout_horizon=3", "objective=val/rollout_nrmse_h3",
        "evaluate.plot_horizons=[1,3]", "model.latent_tokens=9", f"hydra.run.dir={tmp_path / 'run'}",
    ], timeout=120)
    assert result.returncode != 0
    assert "cannot be cut into" in result.stderr + result.stdout
    assert not (tmp_path / "run" / "stage1").exists()


@pytest.mark.slow
def test_multiphysics_trains_both_stages_on_two_processes(tmp_path):
    """`trainer=ddp_cpu`: stage 1 trains one dataset's stem and heads per batch, so the strategy must let the
    other dataset's go without a gradient (plain DDP stops at the second step); the run completes and
    reports both datasets."""
    import json

    from helpers.entry import tiny_overrides

    run_dir = tmp_path / "run"
    done = run_train([*tiny_overrides("multiphysics_upt", tmp_path / "data"), "trainer=ddp_cpu",
                      "evaluate.plots=false", "callbacks.progress=null", f"hydra.run.dir={run_dir}"], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("Starting with 2 processes") == 4  # stage 1 fit, stage 2 fit, validate, test
    results = json.loads((run_dir / "results.json").read_text())
    assert {"test/burgers/nrmse", "test/ns2d/nrmse", "test/nrmse"} <= set(results["metrics"])
    # results.json records what each dataset was: its fields and grid (the tiny sizes of helpers/entry.py).
    assert results["datasets"]["burgers"]["field_spec"] == {"u": 1, "v": 1}
    assert results["datasets"]["ns2d"]["grid_shape"] == [32, 32]


def test_multi_dataset_stage_1_asks_ddp_to_allow_unused_parameters():
    from upt_lightning.pipeline.trainers import with_unused_parameters

    assert with_unused_parameters("ddp") == "ddp_find_unused_parameters_true"
    assert with_unused_parameters("ddp_spawn") == "ddp_spawn_find_unused_parameters_true"
    assert with_unused_parameters("auto") == "auto"


def stage1_checkpoint(cfg, datamodule, path):
    """A real stage-1 checkpoint file of the configured model (its weights untrained: the checks read its settings)."""
    model = build_autoencoder(cfg, datamodule, "grid")
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return str(path)


def test_stage1_checkpoints_of_one_dataset_and_of_several_are_refused_for_the_other_kind(two_files, tmp_path):
    multi_cfg = compose(two_files)
    multi_data = datamodule_of(multi_cfg)
    single_cfg = compose_train(["+experiment=burgers_upt", f"data.path={two_files['burgers']}", "data.generate=null",
                                "data.rollout_horizon=3", "objective=val/rollout_nrmse_h3",
                                "model.grid_encoder.patch_size=4"])  # 64 tokens of its 32x32 grid
    settings = datamodule_settings(single_cfg)
    single_data = GridDataModule(**{k: v for k, v in settings.items() if k != "_target_"})
    single_data.setup("fit")
    multi_ckpt = stage1_checkpoint(multi_cfg, multi_data, tmp_path / "multi.ckpt")
    single_ckpt = stage1_checkpoint(single_cfg, single_data, tmp_path / "single.ckpt")

    def check(cfg, ckpt, datamodule):
        check_autoencoder_ckpt(OmegaConf.merge(cfg, {"autoencoder_ckpt": ckpt}), datamodule)

    check(multi_cfg, multi_ckpt, multi_data)  # each kind is accepted for its own kind of run
    check(single_cfg, single_ckpt, single_data)
    multi_kind = r"is a multi-dataset stage-1 checkpoint \(datasets \['burgers', 'ns2d'\]\)"
    with pytest.raises(CheckpointError, match=multi_kind):
        check(single_cfg, multi_ckpt, single_data)
    with pytest.raises(CheckpointError, match=r"is a one-dataset stage-1 checkpoint .* data.datasets names"):
        check(multi_cfg, single_ckpt, multi_data)
    renamed = compose(two_files, "data.rollout_horizon=3")
    renamed.data.datasets = {"burgers": renamed.data.datasets.burgers, "vorticity": renamed.data.datasets.ns2d}
    with pytest.raises(CheckpointError, match=r"trained on the datasets \['burgers', 'ns2d'\]"):
        check(renamed, multi_ckpt, datamodule_of(renamed))
