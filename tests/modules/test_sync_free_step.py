"""The training step reads nothing back from the device: its NaN/Inf checks are deferred (SyncFreeChecks).

On the CPU a host-device synchronisation cannot be observed directly, so the Python calls that force one
(``.item()``, ``bool()``, ``int()``, ``float()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, ``torch.equal``,
``nonzero``) are counted while ``training_step`` runs; with CUDA present the same step also runs under
``torch.cuda.set_sync_debug_mode("error")``, which catches every kind.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils.data import DataLoader

from helpers.modules import TINY_OPERATOR, loader, make_trainer, tiny_autoencoder
from upt_lightning.callbacks import SyncFreeChecks
from upt_lightning.errors import NonFiniteLossError
from upt_lightning.modules import OperatorModule

SYNCING = [(torch.Tensor, name) for name in ("item", "__bool__", "__int__", "__float__", "tolist", "cpu", "numpy",
                                              "nonzero")] + [(torch, "equal"), (torch, "nonzero")]


class SyncCounter:
    """Counts syncing calls made inside ``module.training_step`` (and, with CUDA, makes them errors there)."""

    def __init__(self, monkeypatch, module):
        self.calls: list[str] = []
        self.inside = False
        for owner, name in SYNCING:
            original = getattr(owner, name)

            def counted(*args, __original=original, __name=name, **kwargs):
                if self.inside:
                    self.calls.append(__name)
                return __original(*args, **kwargs)

            monkeypatch.setattr(owner, name, counted)
        step = module.training_step

        def training_step(*args, **kwargs):
            self.inside = True
            debug = torch.cuda.is_available() and module.device.type == "cuda"
            try:
                with contextlib.ExitStack() as stack:
                    if debug:
                        torch.cuda.set_sync_debug_mode("error")
                        stack.callback(torch.cuda.set_sync_debug_mode, "default")
                    return step(*args, **kwargs)
            finally:
                self.inside = False

        monkeypatch.setattr(module, "training_step", training_step)


def _operator(autoencoder_ckpt, **kwargs):
    return OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR,
                          loss={"lambda_inv_enc": 0.01, "lambda_inv_dec": 0.01, "inverse_loss_warmup_epochs": 0},
                          sampling={"num_queries": 16}, **kwargs)


@pytest.mark.parametrize("stage", ["autoencoder", "operator"])
def test_a_training_step_with_deferred_checks_makes_no_syncing_call(monkeypatch, autoencoder_ckpt, stage):
    module = tiny_autoencoder(sampling={"num_queries": 32}) if stage == "autoencoder" else _operator(autoencoder_ckpt)
    counter = SyncCounter(monkeypatch, module)
    make_trainer(max_steps=4, limit_val_batches=0, callbacks=[SyncFreeChecks(every_n_steps=100)]).fit(
        module, train_dataloaders=loader())
    assert module.global_step == 4
    assert counter.calls == []


def test_the_counter_sees_the_syncs_of_immediate_checks(monkeypatch, autoencoder_ckpt):
    module = _operator(autoencoder_ckpt)
    counter = SyncCounter(monkeypatch, module)
    make_trainer(max_steps=2, limit_val_batches=0, callbacks=[SyncFreeChecks(every_n_steps=1)]).fit(
        module, train_dataloaders=loader())
    assert "__bool__" in counter.calls  # the encoder's input check and the loss check read the device


def test_deferred_checks_raise_the_same_errors_at_the_next_read(autoencoder_ckpt):
    waves = loader()
    batches = [dict(b) for b in waves]
    poisoned = dict(batches[1])
    poisoned["fields"] = poisoned["fields"].clone()
    poisoned["fields"][0, :3, 0] = float("nan")
    batches[1] = poisoned
    replay = DataLoader(batches, batch_size=None)  # the same batches, the second one poisoned
    with pytest.raises(ValueError, match=r"fields contains 3 NaN or infinite values"):
        make_trainer(max_steps=6, limit_val_batches=0, callbacks=[SyncFreeChecks(every_n_steps=3)]).fit(
            _operator(autoencoder_ckpt), train_dataloaders=replay)

    module = _operator(autoencoder_ckpt, optim={"lr": 1e30})  # diverges: the loss goes non-finite within a few steps
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss at global step \d+ .*every few steps"):
        make_trainer(max_steps=30, limit_val_batches=0, callbacks=[SyncFreeChecks(every_n_steps=4)]).fit(
            module, train_dataloaders=loader())
