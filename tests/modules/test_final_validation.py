"""FinalValidation: with check_val_every_n_epoch > 1 the last epoch and a stop requested mid-epoch still validate.

Real Trainers on Lightning's BoringModel; the epochs that validated are recorded (sanity checks excluded).
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.demos.boring_classes import BoringModel

from upt_lightning.callbacks import FinalValidation


class ValidatedEpochs(pl.Callback):
    def __init__(self):
        self.epochs = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.epochs.append(trainer.current_epoch)


class StopAt(pl.Callback):
    """Request a stop after batch ``batch`` of epoch ``epoch``, as EarlyStopping or a Timer would."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            trainer.should_stop = True


def fit(max_epochs: int, every: int, final: bool, extra=(), **trainer_args) -> list[int]:
    record = ValidatedEpochs()
    trainer = pl.Trainer(max_epochs=max_epochs, check_val_every_n_epoch=every, limit_train_batches=4,
                         limit_val_batches=1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[record, *extra],
                         **trainer_args)
    if final:
        trainer.callbacks.append(FinalValidation())  # as make_trainer does: behind the Timer
    trainer.fit(BoringModel())
    return record.epochs


def test_the_last_epoch_validates_when_the_interval_skips_it():
    assert fit(5, 3, final=False) == [2]  # Lightning alone: the final weights are never validated
    assert fit(5, 3, final=True) == [2, 4]
    assert fit(6, 3, final=True) == [2, 5]  # no second validation when the interval already includes it
    assert fit(4, 1, final=True) == [0, 1, 2, 3]


def test_a_stop_mid_epoch_validates():
    assert fit(6, 3, final=False, extra=[StopAt(epoch=1, batch=1)]) == []
    assert fit(6, 3, final=True, extra=[StopAt(epoch=1, batch=1)]) == [1]


def test_a_time_limit_validates_before_it_stops():
    # One microsecond: Lightning's Timer stops after the first batch; the validation must still run.
    assert fit(6, 3, final=False, max_time={"microseconds": 1}) == []
    assert fit(6, 3, final=True, max_time={"microseconds": 1}) == [0]
