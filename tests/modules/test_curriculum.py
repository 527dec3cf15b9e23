"""The inverse-loss curriculum callback: the seed's schedule, logged, and identical after a resume."""

import csv

import pytest
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from helpers.modules import TINY_OPERATOR, loader, make_trainer, tiny_autoencoder
from upt_lightning.callbacks import InverseLossCurriculum
from upt_lightning.modules import OperatorModule


def operator(ckpt, **loss):
    loss = {**dict(lambda_inv_enc=0.015, lambda_inv_dec=0.01, inverse_loss_warmup_epochs=1), **loss}
    return OperatorModule(autoencoder_ckpt=str(ckpt), operator=TINY_OPERATOR, loss=loss, sampling={"num_queries": 16})


def logged_weights(log_dir):
    """{epoch: (w_inv_enc, w_inv_dec)} from a CSVLogger metrics file."""
    out = {}
    with open(log_dir / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            if row.get("train/w_inv_enc"):
                out[int(row["epoch"])] = (float(row["train/w_inv_enc"]), float(row["train/w_inv_dec"]))
    return out


def test_schedule_matches_the_seed_example(autoencoder_ckpt):
    model = operator(autoencoder_ckpt, lambda_inv_enc=0.01, lambda_inv_dec=0.01, inverse_loss_warmup_epochs=5)
    callback = InverseLossCurriculum()
    got = [callback.weights_for_epoch(model, epoch)["lambda_inv_enc"] for epoch in (4, 5, 6, 9, 10)]
    assert got == pytest.approx([0.0, 0.0, 0.002, 0.008, 0.01])


def test_weights_are_applied_logged_and_survive_resume(autoencoder_ckpt, tmp_path):
    def fit(root, max_epochs, ckpt_path=None, checkpoint=None):
        callbacks = [InverseLossCurriculum()] + ([checkpoint] if checkpoint else [])
        logger = CSVLogger(root, name="", version="")
        trainer = make_trainer(max_epochs=max_epochs, limit_train_batches=2, limit_val_batches=0, logger=logger,
                               callbacks=callbacks, enable_checkpointing=checkpoint is not None,
                               log_every_n_steps=1)
        model = operator(autoencoder_ckpt)
        trainer.fit(model, train_dataloaders=loader(), ckpt_path=ckpt_path)
        return model, trainer

    model, _ = fit(tmp_path / "straight", 4)
    straight = logged_weights(tmp_path / "straight")
    # warmup 1: epochs 0 and 1 give 0, then the base weights 0.015 and 0.01 (at most the cap, 0.05).
    assert straight == {0: (0.0, 0.0), 1: (0.0, 0.0), 2: pytest.approx((0.015, 0.01)), 3: pytest.approx((0.015, 0.01))}
    assert model.inverse_weights == {"lambda_inv_enc": 0.015, "lambda_inv_dec": 0.01}

    ckpt_dir = tmp_path / "ckpts"
    fit(tmp_path / "first", 2, checkpoint=ModelCheckpoint(dirpath=ckpt_dir, save_last=True))
    _, resumed_trainer = fit(tmp_path / "second", 4, ckpt_path=str(ckpt_dir / "last.ckpt"),
                             checkpoint=ModelCheckpoint(dirpath=ckpt_dir, save_last=True))
    assert resumed_trainer.current_epoch == 4
    resumed = logged_weights(tmp_path / "second")
    assert resumed == {2: straight[2], 3: straight[3]}


class WeightsInEffect(Callback):
    """Records (epoch, batch_idx, inverse weights, effective weights) after every training batch."""

    def __init__(self):
        self.seen = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append((trainer.current_epoch, batch_idx, dict(pl_module.inverse_weights),
                          pl_module.operator_loss.weights(batch_idx)))


def test_mid_epoch_resume_trains_the_rest_of_the_epoch_with_the_curriculum_weights(autoencoder_ckpt, tmp_path):
    """A checkpoint written in the middle of epoch 1 (every_n_train_steps): on resume Lightning skips
    on_train_epoch_start for that epoch, and the rest of it must still train with the curriculum's weights
    (0 during the warm-up), not the module's base weights."""
    ckpt_dir = tmp_path / "ckpts"

    def fit(max_epochs, ckpt_path=None):
        record = WeightsInEffect()
        checkpoint = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=6, save_top_k=-1, filename="{step}")
        trainer = make_trainer(max_epochs=max_epochs, limit_train_batches=4, limit_val_batches=0, logger=False,
                               callbacks=[InverseLossCurriculum(), record, checkpoint],
                               enable_checkpointing=True)
        trainer.fit(operator(autoencoder_ckpt, inverse_loss_frequency=1), train_dataloaders=loader(),
                    ckpt_path=ckpt_path)
        return record.seen

    straight = fit(3)
    mid_epoch = ckpt_dir / "step=6.ckpt"  # after batch 1 of epoch 1 (4 batches per epoch)
    assert mid_epoch.is_file()
    resumed = fit(3, ckpt_path=str(mid_epoch))
    assert resumed[0][0] == 1, "the resumed fit should continue inside epoch 1"
    expected = {(epoch, idx): (inverse, weights) for epoch, idx, inverse, weights in straight}
    for epoch, idx, inverse, weights in resumed:
        assert (inverse, weights) == expected[(epoch, idx)], f"epoch {epoch} batch {idx}"
    # Epoch 1 is still inside the warm-up (weight 0 up to and at epoch == warmup), epoch 2 at the base weight.
    assert all(w["lambda_inv_enc"] == 0.0 for e, _, w, _ in resumed if e == 1)
    assert [w["lambda_inv_enc"] for e, _, w, _ in resumed if e == 2] == [pytest.approx(0.015)] * 4


def test_callback_refuses_a_module_without_inverse_weights(autoencoder_ckpt):
    with pytest.raises(TypeError, match="OperatorModule"):
        make_trainer(fast_dev_run=1, callbacks=[InverseLossCurriculum()]).fit(
            tiny_autoencoder(), train_dataloaders=loader())
