"""A run dir moved or copied between an interruption and the resume keeps its best checkpoint, in its new place.

Real Trainers; the validation score is scripted per epoch (best at epoch 1, worse afterwards), so which
file is the best one is known in advance.
"""

import shutil

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from upt_lightning.pipeline.trainers import final_checkpoint
from upt_lightning.runtime.run_dir_checkpoint import RunDirCheckpoint, relocated_state

pytestmark = pytest.mark.filterwarnings(
    "ignore:Checkpoint directory .* exists and is not empty",  # the resumed runs write where they wrote before
    "ignore:The dirpath has changed",  # what stock Lightning says when it drops the relocated run's best-k state
)
SCORES = [3.0, 1.0, 2.0, 4.0, 5.0]  # validation score by epoch: the best is epoch 1


class ScriptedScore(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.weight(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/score", SCORES[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=2)


def fit(run_dir, epochs, checkpoint_class, resume=None):
    checkpoints = run_dir / "checkpoints"
    trainer = pl.Trainer(
        max_epochs=epochs, default_root_dir=run_dir, logger=False, enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint_class(dirpath=checkpoints, filename="best-{epoch}", monitor="val/score", mode="min"),
                   checkpoint_class(dirpath=checkpoints, filename="last", save_on_train_epoch_end=True)],
    )
    trainer.fit(ScriptedScore(), ckpt_path=resume, weights_only=True)
    return trainer


def files(directory):
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


@pytest.mark.parametrize("move", [shutil.move, lambda a, b: shutil.copytree(a, b)], ids=["mv", "cp"])
def test_a_relocated_run_resumes_with_its_own_best_checkpoint(tmp_path, move):
    fit(tmp_path / "a", 3, RunDirCheckpoint)
    move(tmp_path / "a", tmp_path / "b")
    original = files(tmp_path / "a" / "checkpoints") if (tmp_path / "a").exists() else None

    trainer = fit(tmp_path / "b", 5, RunDirCheckpoint, resume=tmp_path / "b/checkpoints/last.ckpt")

    best = tmp_path / "b/checkpoints/best-epoch=1.ckpt"
    callback = trainer.checkpoint_callback
    assert callback.best_model_path == str(best.resolve())
    assert callback.best_model_score == 1.0
    # epochs 3 and 4 were worse than the restored best: no new best file (stock Lightning saved epoch 3's)
    assert sorted(p.name for p in (tmp_path / "b/checkpoints").glob("best-*")) == ["best-epoch=1.ckpt"]
    assert final_checkpoint(trainer, tmp_path / "b", "final.ckpt") == best.resolve()
    if original is not None:  # the copy neither read nor rotated the original's files
        assert files(tmp_path / "a" / "checkpoints") == original


def test_final_checkpoint_never_returns_a_file_of_another_run_dir(tmp_path):
    """Lightning's own ModelCheckpoint keeps the copied run's absolute best path: not evaluated."""
    fit(tmp_path / "a", 3, ModelCheckpoint)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    trainer = fit(tmp_path / "b", 3, ModelCheckpoint, resume=tmp_path / "b/checkpoints/last.ckpt")
    assert trainer.checkpoint_callback.best_model_path.startswith(str((tmp_path / "a").resolve()))
    chosen = final_checkpoint(trainer, tmp_path / "b", "final.ckpt")
    assert chosen == tmp_path / "b/checkpoints/final.ckpt" and chosen.is_file()


def test_relocated_state_moves_paths_under_the_old_dir_and_drops_others(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    state = {"dirpath": str(old), "best_model_path": str(old / "best.ckpt"), "last_model_path": "/x/last.ckpt",
             "kth_best_model_path": "", "best_k_models": {str(old / "best.ckpt"): 1.0, "/x/other.ckpt": 2.0}}
    assert relocated_state(state, str(new)) is state  # the new dir holds none of its files: not a relocation
    new.mkdir()
    (new / "best.ckpt").write_bytes(b"")
    assert relocated_state(state, str(new)) == {
        "dirpath": str(new), "best_model_path": str(new / "best.ckpt"), "last_model_path": "",
        "kth_best_model_path": "", "best_k_models": {str(new / "best.ckpt"): 1.0}}
    assert relocated_state(state, str(old)) is state


def test_a_run_continued_in_a_new_dir_starts_its_best_checkpoint_afresh(tmp_path):
    """resume=PATH into a new run dir: the new dir's epochs compete among themselves, as in stock Lightning."""
    fit(tmp_path / "a", 2, RunDirCheckpoint)
    trainer = fit(tmp_path / "b", 4, RunDirCheckpoint, resume=tmp_path / "a/checkpoints/last.ckpt")
    assert trainer.checkpoint_callback.best_model_path == str((tmp_path / "b/checkpoints/best-epoch=2.ckpt").resolve())
