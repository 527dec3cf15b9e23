"""Every loss term with a positive weight must train the operator; frozen parts must never get grads."""

import lightning.pytorch as pl
import pytest
import torch

from helpers.modules import TINY_OPERATOR, loader, make_trainer
from upt_lightning.modules import OperatorModule

# term -> (its loss settings, other OperatorModule arguments). A curriculum weight above 0.05 needs the curriculum's
# cap raised to it (OperatorLoss refuses one above the cap); without the curriculum callback the cap plays no part.
TERMS = {
    "L_forward": (dict(lambda_forward=1.0), {}),
    "L_inv_enc": (dict(lambda_inv_enc=0.5, inverse_loss_max_weight=0.5), {}),
    "L_inv_dec": (dict(lambda_inv_dec=0.5, inverse_loss_max_weight=0.5), {}),
    "L_rollout": (dict(lambda_rollout=1.0), {}),
    "L_spectral": (dict(lambda_spectral=1.0), {}),
    # The drift of declared integrals of the decoded prediction, in physical units.
    "L_conservation": (dict(lambda_conservation=1.0, inverse_loss_max_weight=1.0),
                       dict(conservation={"mean_u": {"kind": "mean", "fields": ["u"]},
                                          "energy": {"kind": "energy", "fields": ["u", "v"]}})),
}
ALL_OFF = dict(lambda_forward=0.0, lambda_inv_enc=0.0, lambda_inv_dec=0.0, lambda_rollout=0.0, lambda_spectral=0.0,
               lambda_conservation=0.0)


class GradientProbe(pl.Callback):
    """Records, after the first backward, which parameters hold a non-zero gradient."""

    def __init__(self):
        self.grads = None

    def on_after_backward(self, trainer, pl_module):
        if self.grads is None:
            self.grads = {
                name: (p.requires_grad, None if p.grad is None else float(p.grad.abs().sum()))
                for name, p in pl_module.named_parameters()
            }


def run_one_step(model, horizon):
    probe = GradientProbe()
    make_trainer(fast_dev_run=1, callbacks=[probe]).fit(model, train_dataloaders=loader(horizon=horizon))
    return probe.grads


def grad_total(grads, prefix):
    return sum(g or 0.0 for name, (_, g) in grads.items() if name.startswith(prefix))


@pytest.mark.parametrize("term", sorted(TERMS))
def test_each_term_alone_trains_operator_and_leaves_frozen_parts_untouched(term, autoencoder_ckpt):
    loss, extra = TERMS[term]
    model = OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR, loss={**ALL_OFF, **loss},
                           sampling={"num_queries": 24}, **extra)
    grads = run_one_step(model, horizon=3 if term == "L_rollout" else 1)
    assert grad_total(grads, "operator.") > 0, f"{term} gave the operator no gradient"
    for name, (requires_grad, grad) in grads.items():
        if name.startswith(("encoder.", "decoder.")):
            assert not requires_grad, f"frozen parameter {name} requires grad"
            assert grad is None, f"frozen parameter {name} got a .grad"


def test_frozen_parameters_are_not_in_the_optimizer(autoencoder_ckpt):
    model = OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR)
    trainer = make_trainer(fast_dev_run=1)
    trainer.fit(model, train_dataloaders=loader())
    in_optimizer = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in model.operator.parameters()}


def test_end_to_end_mode_trains_encoder_and_decoder_too(autoencoder_ckpt):
    model = OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR,
                           freeze_autoencoder=False, sampling={"num_queries": 24},
                           loss={"lambda_inv_enc": 0.5, "lambda_inv_dec": 0.5, "inverse_loss_max_weight": 0.5})
    grads = run_one_step(model, horizon=1)
    for prefix in ("operator.", "encoder.", "decoder."):
        assert grad_total(grads, prefix) > 0, f"{prefix} got no gradient in end-to-end mode"


class EvalModeProbe(OperatorModule):
    """Records the frozen modules' training flags from inside training_step."""

    def training_step(self, batch, batch_idx):
        self.seen_modes = getattr(self, "seen_modes", [])
        self.seen_modes.append((self.encoder.training, self.decoder.training, self.operator.training))
        return super().training_step(batch, batch_idx)


def test_frozen_modules_stay_in_eval_mode_during_fit(autoencoder_ckpt):
    model = EvalModeProbe(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR)
    make_trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0).fit(model, train_dataloaders=loader())
    assert len(model.seen_modes) == 4
    assert all(modes == (False, False, True) for modes in model.seen_modes), model.seen_modes


def test_frozen_operator_stage_needs_a_trained_autoencoder():
    arch = dict(field_channels={"u": 1}, coord_dim=2, grid_shape=(8, 8), encoder={"patch_size": 2})
    with pytest.raises(ValueError, match="autoencoder_ckpt"):
        OperatorModule(autoencoder=arch, freeze_autoencoder=True)
    with pytest.raises(ValueError, match="stage-1 model"):
        OperatorModule()


def test_impossible_loss_settings_fail_at_construction(autoencoder_ckpt):
    with pytest.raises(ValueError, match=r"loss.lambda_inv_enc must be a finite number >= 0"):
        OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), loss={"lambda_inv_enc": -1.0})
    with pytest.raises(ValueError, match=r"loss.inverse_loss_frequency must be >= 1"):
        OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), loss={"inverse_loss_frequency": 0})
    with pytest.raises(ValueError, match="sampling.num_queries must be a positive integer, got 0"):
        OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), sampling={"num_queries": 0})


def test_rollout_loss_without_rollout_windows_is_an_error(autoencoder_ckpt):
    model = OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR,
                           loss={"lambda_rollout": 1.0})
    with pytest.raises(ValueError, match="train_horizon"):
        make_trainer(fast_dev_run=1).fit(model, train_dataloaders=loader(horizon=1))


def test_inverse_loss_frequency_counts_batches(autoencoder_ckpt):
    calls = []

    class CountingDecoder(OperatorModule):
        def training_step(self, batch, batch_idx):
            handle = self.decoder.register_forward_hook(lambda *_: calls.append(batch_idx))
            try:
                return super().training_step(batch, batch_idx)
            finally:
                handle.remove()

    model = CountingDecoder(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR,
                            loss={"lambda_inv_enc": 0.1, "lambda_inv_dec": 0.0, "inverse_loss_frequency": 2,
                                  "inverse_loss_max_weight": 0.1})
    make_trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=0).fit(
        model, train_dataloaders=loader(num=8, batch_size=2))
    assert sorted(set(calls)) == [0, 2]


def test_sampled_inverse_gradient_switch_keeps_the_loss_and_changes_only_the_gradient(autoencoder_ckpt):
    batch = next(iter(loader()))
    results = {}
    for sampled in (True, False):
        torch.manual_seed(0)
        loss = {**ALL_OFF, "lambda_inv_dec": 1.0, "inverse_loss_max_weight": 1.0, "sampled_inverse_gradient": sampled}
        model = OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR, loss=loss,
                               sampling={"num_queries": 24})
        with pytest.warns(UserWarning, match="self.log"):
            loss = model.training_step(batch, 0)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.operator.parameters() if p.grad is not None])
        results[sampled] = (loss.detach(), grads)
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-6, atol=0)
    assert results[False][1].abs().sum() > 0
    assert not torch.allclose(results[True][1], results[False][1], rtol=1e-3)  # an estimate vs the exact gradient


def test_the_conservation_term_needs_declared_quantities(autoencoder_ckpt):
    with pytest.raises(ValueError, match="lambda_conservation > 0 needs the data set's conserved quantities"):
        OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR,
                       loss={"lambda_conservation": 0.1, "inverse_loss_max_weight": 0.1})
