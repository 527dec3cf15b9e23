"""A grid dataset and a mesh dataset in one config (+experiment=multiphysics_mesh_upt): the mesh gets its MeshEncoder
settings from model.mesh_encoder (and its own overrides), the grid its patch size; settings that the mesh cannot
serve are refused before training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from helpers.entry import compose_train, multi_datamodule_of as datamodule_of, run_train
from upt_lightning.data.writers import MeshWriter, PDEBench2DWriter
from upt_lightning.errors import CheckpointError, ConfigError
from upt_lightning.models.grid_encoder import GridEncoder
from upt_lightning.models.mesh_encoder import MeshEncoder
from upt_lightning.pipeline.checkpoint_checks import check_autoencoder_ckpt
from upt_lightning.pipeline.data_settings import datamodule_settings
from upt_lightning.pipeline.multi_data import check_multi_against_data, dataset_architectures
from upt_lightning.pipeline.stage1 import build_autoencoder, stage1_key

MESH_POINTS = [40 + 2 * i for i in range(10)]  # points of each test mesh: the smallest has 40


@pytest.fixture()
def files(tmp_path):
    x = np.linspace(0, 1, 32, endpoint=False)
    rng = np.random.default_rng(0)
    with PDEBench2DWriter(tmp_path / "grid.h5", num=10, x=x, y=x, t=np.arange(4) * 0.1, field_names=["u", "v"]) as w:
        w.append(rng.normal(size=(10, 4, 32, 32, 2)).astype(np.float32))
    with MeshWriter(tmp_path / "mesh.h5", num=10, field_names=["u", "v"]) as writer:
        for count in MESH_POINTS:
            writer.append(rng.uniform(0, 1, (count, 2)), rng.normal(size=(4, count, 2)), np.arange(4) * 0.1)
    return {"burgers": str(tmp_path / "grid.h5"), "burgers_mesh": str(tmp_path / "mesh.h5")}


def compose(files, *overrides):
    return compose_train([
        "+experiment=multiphysics_mesh_upt", f"data.datasets.burgers.path={files['burgers']}",
        f"data.datasets.burgers_mesh.path={files['burgers_mesh']}", "data.rollout_horizon=3",
        "objective=val/rollout_nrmse_h3", "model.mesh_encoder.num_supernodes=32", *overrides,
    ])


def test_the_mesh_dataset_gets_the_mesh_encoder_and_the_grid_its_patch_size(files):
    cfg = compose(files)
    dm = datamodule_of(cfg)
    assert dm.grid_shape_by_dataset == {"burgers": (32, 32), "burgers_mesh": None}
    check_multi_against_data(cfg, dm)
    datasets = dataset_architectures(cfg, dm)
    assert datasets["burgers"] == {"field_channels": {"u": 1, "v": 1}, "grid_shape": [32, 32],
                                   "encoder": {"patch_size": [4, 4]}}  # 64 tokens: an 8x8 layout
    mesh = OmegaConf.to_container(cfg.model.mesh_encoder, resolve=True)
    assert datasets["burgers_mesh"] == {"field_channels": {"u": 1, "v": 1}, "grid_shape": None,
                                        "encoder": {"kind": "mesh", **mesh}}
    model = build_autoencoder(cfg, dm, "grid")
    grid, cloud = model.encoder.parts["burgers"], model.encoder.parts["burgers_mesh"]
    assert isinstance(grid, GridEncoder) and isinstance(cloud, MeshEncoder) and grid.blocks is cloud.blocks
    assert cloud.num_supernodes == 32 and cloud.radius == mesh["radius"]

    # A dataset overrides keys of its own encoder kind; the override enters the stage-1 cache key.
    override = compose(files, "+data.datasets.burgers_mesh.encoder.radius=0.2")
    assert dataset_architectures(override, datamodule_of(override))["burgers_mesh"]["encoder"]["radius"] == 0.2
    assert "encoder" not in datamodule_settings(override)["datasets"]["burgers_mesh"]  # not the DataModule's
    assert stage1_key(override, None) != stage1_key(cfg, None)


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.mesh_encoder.num_supernodes=50"], "more than the 40 points of its smallest mesh"),
    (["+data.datasets.burgers_mesh.encoder.num_supernodes=45"], "num_supernodes=45 supernodes, more than"),
    (["model.mesh_encoder.dim=64"], r"differ in the trunk's dim \(96 against 64\)"),
    (["+data.datasets.burgers_mesh.encoder.depth=3"], "the encoder trunk and the token layout are shared"),
    (["+data.datasets.burgers_mesh.encoder.patch_size=4"], r"sets \['patch_size'\], which the mesh dataset's encoder"),
    (["loss.lambda_spectral=0.1"], "burgers_mesh is a mesh"),
])
def test_settings_the_mesh_cannot_serve_are_refused(files, overrides, message):
    cfg = compose(files, *overrides)
    with pytest.raises(ConfigError, match=message):
        check_multi_against_data(cfg, datamodule_of(cfg))


def test_a_stage1_checkpoint_of_the_pair_is_checked_against_the_mesh_settings(files, tmp_path):
    cfg = compose(files)
    dm = datamodule_of(cfg)
    model = build_autoencoder(cfg, dm, "grid")
    path = tmp_path / "pair.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    check_autoencoder_ckpt(OmegaConf.merge(cfg, {"autoencoder_ckpt": str(path)}), dm)
    other = compose(files, "model.mesh_encoder.num_supernodes=16")
    with pytest.raises(CheckpointError, match="burgers_mesh.encoder"):
        check_autoencoder_ckpt(OmegaConf.merge(other, {"autoencoder_ckpt": str(path)}), datamodule_of(other))


def test_train_py_reports_a_mesh_setting_without_training(files, tmp_path):
    result = run_train([
        "+experiment=multiphysics_mesh_upt", f"data.datasets.burgers.path={files['burgers']}",
        f"data.datasets.burgers_mesh.path={files['burgers_mesh']}", "data.rollout_horizon=3",
        "objective=val/rollout_nrmse_h3", "evaluate.plot_horizons=[1,3]", "model.mesh_encoder.num_supernodes=500",
        f"hydra.run.dir={tmp_path / 'run'}",
    ], timeout=120)
    assert result.returncode != 0
    assert "points of its smallest mesh" in result.stderr + result.stdout
    assert not (tmp_path / "run" / "stage1").exists()
