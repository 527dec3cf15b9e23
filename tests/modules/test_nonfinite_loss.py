"""nan_policy: a NaN batch either stops the fit with a message naming step, batch and loss terms (raise), or
is skipped without touching weights or optimizer state (skip). Real Trainers; the NaN comes with the data."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from helpers.modules import TINY_OPERATOR, WindowDataset, make_trainer, tiny_autoencoder, travelling_waves
from upt_lightning.errors import ConfigError, NonFiniteLossError, UPTWarning, is_user_error
from upt_lightning.modules import OperatorModule

BATCH = 4


POISON = 1e30  # finite, so it passes the encoder's input checks, but the loss overflows to inf / NaN


class PoisonedWindows(WindowDataset):
    """Windows whose ``key`` ("fields" or "targets") is ``POISON`` for the items of the batches in ``poisoned``."""

    def __init__(self, poisoned: set[int], key: str = "fields"):
        super().__init__(travelling_waves(4, 6))  # 4 trajectories x 5 windows = 5 batches of 4
        self.poisoned, self.key = poisoned, key

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if index // BATCH in self.poisoned:
            item[self.key] = torch.full_like(item[self.key], POISON)
        return item


def poisoned_loader(poisoned: set[int], key: str = "fields") -> DataLoader:
    return DataLoader(PoisonedWindows(poisoned, key), batch_size=BATCH, shuffle=False)


class Snapshots(pl.Callback):
    """Parameters and optimizer state before and after every training batch."""

    def __init__(self):
        self.before, self.after = {}, {}

    @staticmethod
    def _state(trainer, module):
        params = {name: p.detach().clone() for name, p in module.named_parameters()}
        return params, copy.deepcopy(trainer.optimizers[0].state_dict()["state"])

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before[batch_idx] = self._state(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.after[batch_idx] = self._state(trainer, module)


def assert_same(a, b):
    params_a, opt_a = a
    params_b, opt_b = b
    assert params_a.keys() == params_b.keys()
    for name in params_a:
        assert torch.equal(params_a[name], params_b[name]), name
    assert opt_a.keys() == opt_b.keys()
    for index in opt_a:
        for key, value in opt_a[index].items():
            assert torch.equal(value, opt_b[index][key]), (index, key)


def assert_changed(a, b):
    assert any(not torch.equal(a[0][n], b[0][n]) for n in a[0])


def make_module(stage: str, autoencoder_ckpt, **kwargs):
    if stage == "autoencoder":
        return tiny_autoencoder(sampling={"num_queries": 32}, **kwargs)
    return OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR, sampling={"num_queries": 32},
                          **kwargs)


@pytest.mark.parametrize("stage", ["autoencoder", "operator"])
def test_skip_leaves_weights_and_optimizer_state_untouched(stage, autoencoder_ckpt):
    model = make_module(stage, autoencoder_ckpt, nan_policy="skip")
    snaps = Snapshots()
    trainer = make_trainer(max_epochs=1, limit_val_batches=0, gradient_clip_val=1.0, callbacks=[snaps],
                           log_every_n_steps=1)
    with pytest.warns(UPTWarning, match="nan_policy=skip: skipped global step 1") as caught:
        trainer.fit(model, train_dataloaders=poisoned_loader({1, 3}))
    for poisoned in (1, 3):
        assert_same(snaps.before[poisoned], snaps.after[poisoned])
    for clean in (0, 2, 4):  # the neighbouring batches do update: the comparison above can fail
        assert_changed(snaps.before[clean], snaps.after[clean])
    assert trainer.callback_metrics["train/skipped_steps"] == 2
    ours = [w for w in caught if issubclass(w.category, UPTWarning)]
    assert len(ours) == 1  # warned once, for the first skip
    assert "global step 1 (epoch 0, batch 1)" in str(ours[0].message)


@pytest.mark.parametrize("stage", ["autoencoder", "operator"])
def test_raise_names_step_batch_and_component_before_any_update(stage, autoencoder_ckpt):
    model = make_module(stage, autoencoder_ckpt)
    assert model.hparams.nan_policy == "raise"  # the default
    snaps = Snapshots()
    trainer = make_trainer(max_epochs=1, limit_val_batches=0, callbacks=[snaps])
    # Operator stage: huge targets poison the target latents (L_forward) and the decoded comparison
    # (L_inv_enc), but not the cycle term L_inv_dec, which never sees the targets.
    key = "fields" if stage == "autoencoder" else "targets"
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.fit(model, train_dataloaders=poisoned_loader({2}, key))
    message = str(raised.value)
    assert "global step 2 (epoch 0, batch 2)" in message
    assert f"max |{key}| 1e+30" in message and "nan_policy=skip" in message
    if stage == "autoencoder":
        # L_cycle re-encodes NaN decoded fields: the encoder's input check lets model outputs through.
        assert "L_recon=nan" in message and "L_cycle=nan" in message
    else:
        assert "L_forward=nan" in message and "L_inv_enc=" in message and "L_inv_dec" not in message
    # Raised before backward: the weights are those after batch 1.
    params = {name: p.detach() for name, p in model.named_parameters()}
    assert all(torch.equal(params[n], snaps.after[1][0][n]) for n in params)
    assert is_user_error(raised.value)


def test_skip_is_refused_under_ddp_and_unknown_policies_are_named():
    with pytest.raises(ValueError, match=r"nan_policy='ignore' is unknown; choose one of \['raise', 'skip'\]"):
        tiny_autoencoder(nan_policy="ignore")
    from upt_lightning.modules.nonfinite import check_policy_supported

    with pytest.raises(ConfigError, match="one process only"):
        check_policy_supported("skip", world_size=2)
    check_policy_supported("raise", world_size=2)
    check_policy_supported("skip", world_size=1)
