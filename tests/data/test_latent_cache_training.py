"""Stage 2 fitted by a Lightning Trainer from the latent cache: the same losses as encoding on the fly."""

from __future__ import annotations

import json
import warnings

import lightning.pytorch as pl
import pytest
import torch

from helpers.latent_cache import fit_autoencoder, operator_module, write_groups_file
from upt_lightning.callbacks import LatentCacheCallback
from upt_lightning.data.datamodules import GridDataModule

EPOCHS, STEPS = 2, 6  # 10 windows, 3 batches an epoch: the second epoch's shuffle must agree too


class Recorder(pl.Callback):
    """Each training step's loss and the keys of its batch."""

    def __init__(self):
        self.losses, self.keys = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())
        self.keys.append(set(batch))


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache_training")
    write_groups_file(folder / "waves.h5")
    return folder / "waves.h5", fit_autoencoder(folder / "waves.h5", folder / "autoencoder.ckpt")


def _fit(stage1, cached: bool, **module_kwargs) -> tuple[Recorder, GridDataModule]:
    data_path, ckpt = stage1
    datamodule = GridDataModule(str(data_path), batch_size=4, split=(0.5, 0.25, 0.25), rollout_horizon=2)
    pl.seed_everything(0, verbose=False)
    module = operator_module(ckpt, **module_kwargs)
    recorder = Recorder()
    # max_epochs, not max_steps: the LR schedule then loads the train loader early (estimated_stepping_batches).
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[recorder, *([LatentCacheCallback()] if cached else [])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=datamodule)
    return recorder, datamodule


@pytest.mark.parametrize("inverse", [True, False], ids=["inverse losses on", "inverse losses off"])
def test_fit_from_the_cache_has_the_losses_of_encoding_on_the_fly(stage1, inverse):
    plain, _ = _fit(stage1, cached=False, loss={"use_inverse_losses": inverse})
    cached, datamodule = _fit(stage1, cached=True, loss={"use_inverse_losses": inverse})
    assert len(cached.losses) == len(plain.losses) == STEPS
    # Fields are served only when a loss term compares them; latents only when cached.
    expected = {"latents", "dt", "traj", "t0"} | ({"fields", "targets", "coords"} if inverse else set())
    assert cached.keys == [expected] * STEPS and all("latents" not in keys for keys in plain.keys)
    torch.testing.assert_close(torch.tensor(cached.losses), torch.tensor(plain.losses), rtol=1e-4, atol=1e-7)
    assert datamodule.latent_cache is None  # dropped when the fit ended
    assert "latents" not in next(iter(datamodule.train_dataloader()))


def test_cache_callback_refuses_a_trainable_encoder_and_plain_dataloaders(stage1):
    with pytest.raises(ValueError, match="freeze_autoencoder=True"):
        _fit(stage1, cached=True, freeze_autoencoder=False)
    data_path, ckpt = stage1
    datamodule = GridDataModule(str(data_path), batch_size=4, split=(0.5, 0.25, 0.25), rollout_horizon=2)
    datamodule.setup("fit")
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[LatentCacheCallback()])
    with pytest.raises(TypeError, match="DataModule"):
        trainer.fit(operator_module(ckpt), train_dataloaders=datamodule.train_dataloader())


class RankRecorder(pl.Callback):
    """Appends each batch's keys and windows to ``<folder>/rank<r>.json`` lines (picklable for ddp_spawn)."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        windows = list(zip(batch["traj"].tolist(), batch["t0"].tolist()))
        with open(f"{self.folder}/rank{trainer.global_rank}.json", "a") as file:
            file.write(json.dumps({"epoch": trainer.current_epoch, "keys": sorted(batch), "windows": windows}) + "\n")


@pytest.mark.slow
def test_ddp_ranks_read_disjoint_shares_of_the_cache(stage1, tmp_path):
    data_path, ckpt = stage1
    datamodule = GridDataModule(str(data_path), batch_size=2, split=(0.5, 0.25, 0.25), rollout_horizon=2)
    trainer = pl.Trainer(accelerator="cpu", strategy="ddp_spawn", devices=2, max_epochs=1, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[RankRecorder(str(tmp_path)), LatentCacheCallback()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(operator_module(ckpt, loss={"use_inverse_losses": False}), datamodule=datamodule)
    shares = []
    for rank in (0, 1):
        records = [json.loads(line) for line in (tmp_path / f"rank{rank}.json").read_text().splitlines()]
        assert all(record["keys"] == ["dt", "latents", "t0", "traj"] for record in records)
        shares.append({tuple(window) for record in records for window in record["windows"]})
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == 10  # every training window, once
