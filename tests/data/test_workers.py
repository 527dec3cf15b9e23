"""data.num_workers: a count, or "auto" from the CPUs this process may use, never more than the machine has."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

from upt_lightning.data import workers
from upt_lightning.data.datamodules import GridDataModule
from upt_lightning.data.workers import resolve_num_workers


@pytest.mark.parametrize("cpus, processes, expected", [(2, 1, 1), (1, 1, 0), (16, 1, 8), (32, 4, 7), (8, 8, 0)])
def test_auto_leaves_each_training_process_one_cpu_and_caps_the_count(monkeypatch, cpus, processes, expected):
    monkeypatch.setattr(workers, "usable_cpus", lambda: cpus)
    assert resolve_num_workers("auto", processes) == expected
    assert resolve_num_workers(3, processes) == 3  # a number is taken as given


@pytest.mark.parametrize("bad", [-1, "four", 1.5, True])
def test_a_worker_count_that_is_neither_a_count_nor_auto_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="data.num_workers.*'auto'"):
        GridDataModule(tmp_path / "x.h5", num_workers=bad)


def test_auto_workers_load_batches_without_torchs_excessive_worker_warning(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["tensor"] = np.random.default_rng(0).normal(size=(10, 6, 8)).astype(np.float32)
        f["x-coordinate"] = np.linspace(0, 1, 8, dtype=np.float32)
        f["t-coordinate"] = np.arange(7, dtype=np.float32) * 0.1
    dm = GridDataModule(path, batch_size=4, num_workers="auto", split=(0.6, 0.2, 0.2), rollout_horizon=3)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.num_workers == max(0, min(8, workers.usable_cpus() - 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = next(iter(loader))
    assert batch["fields"].shape[0] == 4
    assert not [w for w in caught if "worker" in str(w.message)], [str(w.message) for w in caught]


def test_the_pdebench_data_config_takes_its_workers_from_the_machine():
    from pathlib import Path

    from omegaconf import OmegaConf

    conf = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "data" / "pdebench.yaml")
    assert conf.num_workers == "auto"


def test_pin_memory_auto_pins_only_for_a_cuda_trainer(tmp_path):
    from types import SimpleNamespace

    import torch

    dm = GridDataModule(tmp_path / "x.h5")
    assert dm._pin_memory() is False  # no trainer yet
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), num_devices=1)
    assert dm._pin_memory() is False
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)), num_devices=1)
    assert dm._pin_memory() is True
    assert GridDataModule(tmp_path / "x.h5", pin_memory=False)._pin_memory() is False
    with pytest.raises(ValueError, match="pin_memory='yes'"):
        GridDataModule(tmp_path / "x.h5", pin_memory="yes")
