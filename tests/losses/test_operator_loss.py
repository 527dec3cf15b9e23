"""OperatorLoss: the one place that decides each term's weight at a batch (base, curriculum, frequency)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from upt_lightning.losses import OperatorLoss, compute_operator_loss_bundle
from upt_lightning.losses.bundle import TERM_WEIGHT_KEYS, _term_weights


def make(**kwargs):
    weights = dict(lambda_forward=1.0, lambda_inv_enc=0.02, lambda_inv_dec=0.01, lambda_rollout=0.5,
                   lambda_spectral=0.0, lambda_conservation=0.0)
    return OperatorLoss(**{**weights, "inverse_loss_frequency": 3, "inverse_loss_warmup_epochs": 2,
                           "inverse_loss_max_weight": 0.02, **kwargs})


def test_without_an_epoch_the_inverse_terms_keep_their_base_weight_on_their_batches():
    loss = make()
    assert loss.weights(0) == {"lambda_forward": 1.0, "lambda_inv_enc": 0.02, "lambda_inv_dec": 0.01,
                               "lambda_rollout": 0.5, "lambda_spectral": 0.0, "lambda_conservation": 0.0}
    for batch_idx in (1, 2, 4, 5):
        off = loss.weights(batch_idx)
        assert off["lambda_inv_enc"] == off["lambda_inv_dec"] == 0.0
        assert off["lambda_forward"] == 1.0 and off["lambda_rollout"] == 0.5  # other terms never change
    assert loss.weights(3) == loss.weights(0)


@pytest.mark.parametrize("epoch, enc, dec", [(0, 0.0, 0.0), (2, 0.0, 0.0), (3, 0.01, 0.005), (4, 0.02, 0.01),
                                             (9, 0.02, 0.01)])
def test_the_epoch_applies_the_seed_curriculum(epoch, enc, dec):
    loss = make()
    loss.set_epoch(epoch)
    assert loss.inverse_weights() == pytest.approx({"lambda_inv_enc": enc, "lambda_inv_dec": dec})
    assert loss.weights(0)["lambda_inv_enc"] == pytest.approx(enc)
    assert loss.weights(1)["lambda_inv_enc"] == 0.0


def test_use_inverse_false_switches_both_terms_off_at_every_batch_and_epoch():
    loss = make(use_inverse_losses=False, inverse_loss_frequency=1)
    loss.set_epoch(9)
    assert loss.weights(0)["lambda_inv_enc"] == loss.weights(0)["lambda_inv_dec"] == 0.0


def test_calling_it_computes_the_bundle_with_the_batch_weights():
    pred, target = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    rollout_pred, rollout_target = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    loss = OperatorLoss(lambda_forward=2.0, lambda_inv_enc=0.0, lambda_inv_dec=0.0, lambda_rollout=0.5,
                        lambda_spectral=0.0, lambda_conservation=0.0)
    bundle = loss(5, pred_next=pred, target_next=target, pred_rollout=rollout_pred, target_rollout=rollout_target)
    expected = compute_operator_loss_bundle(pred_next=pred, target_next=target, pred_rollout=rollout_pred,
                                            target_rollout=rollout_target, weights=loss.weights(5))
    torch.testing.assert_close(bundle.total, expected.total)
    torch.testing.assert_close(bundle.total, 2.0 * torch.mean((pred - target) ** 2)
                               + 0.5 * torch.mean((rollout_pred - rollout_target) ** 2))


def test_unknown_keys_and_impossible_settings_are_refused_by_name():
    assert set(TERM_WEIGHT_KEYS) == {"lambda_forward", "lambda_inv_enc", "lambda_inv_dec", "lambda_rollout",
                                     "lambda_spectral", "lambda_conservation"}
    with pytest.raises(TypeError, match="lambda_bogus"):
        OperatorLoss(lambda_bogus=1.0)
    with pytest.raises(ValueError, match="loss.lambda_inv_enc"):
        OperatorLoss(lambda_inv_enc=-0.1)
    with pytest.raises(ValueError, match="inverse_loss_frequency"):
        OperatorLoss(inverse_loss_frequency=0)


@pytest.mark.parametrize("key", ["lambda_inv_enc", "lambda_inv_dec", "lambda_conservation"])
def test_a_curriculum_weight_above_the_cap_is_refused_by_name(key):
    with pytest.raises(ValueError, match=rf"loss\.{key}=0\.06 exceeds loss\.inverse_loss_max_weight=0\.05"):
        OperatorLoss(**{key: 0.06})
    assert OperatorLoss(**{key: 0.06, "inverse_loss_max_weight": 0.06}).base[key] == 0.06  # at the cap: accepted
    assert OperatorLoss(lambda_rollout=0.5, lambda_spectral=0.5).base["lambda_rollout"] == 0.5  # not scheduled


def test_the_defaults_are_the_loss_config_groups():
    loss = OperatorLoss()
    assert (loss.warmup_epochs, loss.max_weight, loss.inverse_frequency, loss.epoch) == (5, 0.05, 1, None)
    assert loss.weights(0) == {"lambda_forward": 1.0, "lambda_inv_enc": 0.01, "lambda_inv_dec": 0.01,
                               "lambda_rollout": 0.0, "lambda_spectral": 0.0, "lambda_conservation": 0.0}
    assert (loss.lambda_recon, loss.use_inverse, loss.sampled_gradient) == (1.0, True, True)
    config = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "loss" / "default.yaml")
    group = {key: value for key, value in OmegaConf.to_container(config).items() if key != "_target_"}
    assert loss.as_dict() == group
    assert OperatorLoss(**loss.as_dict()).as_dict() == loss.as_dict()


def test_given_the_bundles_defaults_it_weighs_like_the_bundle():
    zero = dict(lambda_inv_enc=0.0, lambda_inv_dec=0.0, lambda_rollout=0.0, lambda_spectral=0.0,
                lambda_conservation=0.0)
    assert OperatorLoss(**zero).weights(0) == _term_weights(None, None)
    assert _term_weights(None, None) == {key: 1.0 if key == "lambda_forward" else 0.0 for key in TERM_WEIGHT_KEYS}


def test_reads_fields_when_a_term_compares_physical_fields():
    zero = dict(lambda_inv_enc=0.0, lambda_inv_dec=0.0, lambda_spectral=0.0, lambda_conservation=0.0)
    assert not OperatorLoss(**zero, lambda_rollout=0.5).reads_fields()
    assert not OperatorLoss(**{**zero, "lambda_inv_enc": 0.01}, use_inverse_losses=False).reads_fields()
    for key in zero:
        assert OperatorLoss(**{**zero, key: 0.01}).reads_fields(), key


def test_the_conservation_weight_follows_the_curriculum_but_not_the_inverse_frequency():
    loss = OperatorLoss(lambda_conservation=0.04, lambda_inv_enc=0.02, lambda_inv_dec=0.0, inverse_loss_frequency=3,
                        inverse_loss_warmup_epochs=2, inverse_loss_max_weight=0.04, use_inverse_losses=False)
    assert loss.weights(1)["lambda_conservation"] == 0.04  # no epoch: base weight, on every batch
    loss.set_epoch(3)
    assert loss.weights(1)["lambda_conservation"] == pytest.approx(0.02)  # ramp: 0.04 * (3 - 2) / 2
    loss.set_epoch(5)
    assert loss.weights(2)["lambda_conservation"] == pytest.approx(0.04)  # the ramp's end: the base weight
    assert loss.weights(0)["lambda_inv_enc"] == 0.0  # use_inverse=False leaves the conservation term alone
