"""Tiny overrides that make every experiment run in seconds, and a subprocess runner for train.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TINY_COMMON = [
    "model=tiny",
    "trainer.accelerator=cpu",
    "data.batch_size=4",
    "data.rollout_horizon=3",
    "evaluate.plot_horizons=[1,3]",
    "objective=val/rollout_nrmse_h3",
    "stage1.max_epochs=1",
    "stage2.max_epochs=1",
    "stage1.limit_train_batches=3",
    "stage2.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
]

TINY_DATA = {
    "burgers_upt": ["data.generate_options.resolution=16", "data.generate_options.num=10",
                    "+data.generate_options.num_steps=8", "sampling.num_queries=64"],
    "burgers1d_upt": ["+data.generate_options.num=6", "+data.generate_options.resolution=64",
                      "model.grid_encoder.patch_size=8", "sampling.num_queries=32"],
    "burgers_mesh_upt": ["+data.generate_options.num=6", "+data.generate_options.resolution=16",
                         "+data.generate_options.min_points=150", "+data.generate_options.max_points=200",
                         "+data.generate_options.num_steps=8", "sampling.num_queries=64",
                         "model.mesh_encoder.num_supernodes=32"],
}


TINY_DATA["burgers_fno"] = TINY_DATA["burgers_upt"]
# Split 8 / 4 / 4 of 16 trajectories: the first 4 training ones, as the experiment takes the first 16 of 64.
TINY_DATA["finetune_upt"] = ["data.generate_options.resolution=16", "data.generate_options.num=16",
                             "+data.generate_options.num_steps=8", "data.max_train_trajectories=4",
                             "sampling.num_queries=64"]
TINY_DATA["ns2d_upt"] = ["data.generate_options.resolution=16", "data.generate_options.num=10",
                         "+data.generate_options.num_steps=8", "+data.generate_options.max_wavenumber=4",
                         "+data.generate_options.substeps=8", "sampling.num_queries=64"]
TINY_DATA["ns2d_fno"] = TINY_DATA["ns2d_upt"]
TINY_DATA["multiphysics_upt"] = [
    "data.datasets.burgers.generate_options.resolution=16", "data.datasets.burgers.generate_options.num=10",
    "+data.datasets.burgers.generate_options.num_steps=8",
    # Another grid than Burgers': the model gives each dataset its own patch size.
    "data.datasets.ns2d.generate_options.resolution=32", "data.datasets.ns2d.generate_options.num=10",
    "+data.datasets.ns2d.generate_options.num_steps=8", "+data.datasets.ns2d.generate_options.max_wavenumber=4",
    "+data.datasets.ns2d.generate_options.substeps=8", "sampling.num_queries=64",
]
# A grid and a mesh dataset in one model: the mesh's encoder is a MeshEncoder stem around the grid's trunk.
TINY_DATA["multiphysics_mesh_upt"] = [
    "data.datasets.burgers.generate_options.resolution=16", "data.datasets.burgers.generate_options.num=10",
    "+data.datasets.burgers.generate_options.num_steps=8",
    "+data.datasets.burgers_mesh.generate_options.num=10", "+data.datasets.burgers_mesh.generate_options.resolution=16",
    "+data.datasets.burgers_mesh.generate_options.min_points=150",
    "+data.datasets.burgers_mesh.generate_options.max_points=200",
    "+data.datasets.burgers_mesh.generate_options.num_steps=8", "sampling.num_queries=64",
    "model.mesh_encoder.num_supernodes=32",
]
# Experiments whose model is no UPT preset keep it (model=tiny would make them UPT runs), at a tiny size.
TINY_MODEL = {"burgers_fno": ["model.n_modes=8", "model.hidden_channels=8", "model.n_layers=2"]}
TINY_MODEL["ns2d_fno"] = TINY_MODEL["burgers_fno"]
TINY_DATA["burgers_mesh_gino"] = [item for item in TINY_DATA["burgers_mesh_upt"] if not item.startswith(("model.", "sampling."))]
TINY_MODEL["burgers_mesh_gino"] = ["model.latent_grid=8", "model.n_modes=4", "model.hidden_channels=8", "model.n_layers=1",
                                   "model.radius=0.25"]


def tiny_overrides(experiment: str, data_dir: Path) -> list[str]:
    common = TINY_COMMON
    if experiment in TINY_MODEL:
        common = [*(item for item in TINY_COMMON if not item.startswith("model=")), *TINY_MODEL[experiment]]
    return [f"+experiment={experiment}", f"data_dir={data_dir}", *common, *TINY_DATA[experiment]]


def compose_train(overrides: list[str], return_hydra_config: bool = False):
    """The train.py config composed in-process by Hydra from conf/ with ``overrides`` (with its ``hydra``
    node, e.g. the sweeper's search space, when ``return_hydra_config``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose("train", overrides=overrides, return_hydra_config=return_hydra_config)


def multi_datamodule_of(cfg):
    """The MultiDataModule that ``cfg``'s data group builds, set up for fitting."""
    from upt_lightning.data import MultiDataModule
    from upt_lightning.pipeline.data_settings import datamodule_settings

    settings = datamodule_settings(cfg)
    settings.pop("_target_")
    datamodule = MultiDataModule(**settings)
    datamodule.setup("fit")
    return datamodule


def run_train(args: list[str], cwd: Path = REPO, timeout: int = 300,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)
