"""Anchored decoding: the weight fit, the correction in rollouts, checkpoints and the calibration."""

import pytest
import torch

from helpers.modules import loader, make_trainer
from upt_lightning.modules import OperatorModule
from upt_lightning.modules.anchor import AnchorFit, calibrate_anchor


def random_fields(seed, shape=(6, 50, 2)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_the_fit_recovers_the_fraction_of_the_input_error_that_persists():
    input_error, target, noise = random_fields(0), random_fields(1) + 3.0, random_fields(2)
    # Noise orthogonal to the input error per sample and channel, so the least-squares weight is exactly 0.6.
    noise -= (noise * input_error).sum(1, keepdim=True) / input_error.pow(2).sum(1, keepdim=True) * input_error
    error = -0.6 * input_error + 0.1 * noise
    fit = AnchorFit()
    fit.update(1, error, input_error, target)
    assert fit.weight(1) == pytest.approx(0.6, abs=1e-6)
    for weight in (0.0, 0.6, 1.0):  # nrmse() from the kept sums equals the direct computation
        direct = ((error + weight * input_error).pow(2).sum(1) / target.pow(2).sum(1)).sqrt().mean()
        assert fit.nrmse(1, weight) == pytest.approx(float(direct), rel=1e-6)
    assert fit.nrmse(1, 0.6) < fit.nrmse(1, 0.0)

    clipped = AnchorFit()
    clipped.update(1, input_error.clone(), input_error, target)  # the error grows with e_0: weight 0, not < 0
    clipped.update(3, -2.0 * input_error, input_error, target)  # more than all of e_0 persists: weight 1
    assert clipped.weights() == [0.0, 0.0, 1.0]  # step 2 never seen: no correction


def test_masked_points_do_not_count():
    input_error, target = random_fields(3), random_fields(4) + 3.0
    error = -0.3 * input_error
    mask = torch.ones(input_error.shape[:2], dtype=torch.bool)
    mask[:, -10:] = False
    error[:, -10:] = 100.0 * input_error[:, -10:]  # padding with garbage
    fit = AnchorFit()
    fit.update(1, error, input_error, target, mask)
    assert fit.weight(1) == pytest.approx(0.3, abs=1e-6)


@pytest.fixture()
def operator(autoencoder_ckpt):
    torch.manual_seed(0)
    return OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator={"dim": 16, "depth": 1, "num_heads": 2}).eval()


def first_batch(horizon=3):
    return next(iter(loader(horizon=horizon)))


def test_rollouts_at_the_input_points_add_the_weighted_input_error(operator):
    batch = first_batch()
    fields, coords = batch["fields"], batch["coords"]
    plain = operator.rollout(fields, coords, 3)
    physical = operator.rollout(fields, coords, 2, mode="physical")
    operator.anchor_weights = [0.5, 0.25]
    anchored = operator.rollout(fields, coords, 3)
    norm = operator.normalizer
    with torch.no_grad():
        points = norm.normalize_coords(coords)
        latent = operator.encode(norm.normalize_fields(fields), points, operator.encoder_meta(None))
        input_error = fields - norm.denormalize_fields(operator.decode(latent, points))
    assert input_error.abs().mean() > 1e-3  # the correction is not trivially zero
    torch.testing.assert_close(anchored[:, 0], plain[:, 0] + 0.5 * input_error, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(anchored[:, 1], plain[:, 1] + 0.25 * input_error, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(anchored[:, 2], plain[:, 2])  # past the weights: unchanged
    torch.testing.assert_close(operator(fields, coords), anchored[:, 0])  # one step, the same correction
    # Other query points (here the same values, another tensor) and physical mode: e_0 is not known there.
    torch.testing.assert_close(operator.rollout(fields, coords, 3, query_points=coords.clone()), plain)
    torch.testing.assert_close(operator.rollout(fields, coords, 2, mode="physical"), physical)


def test_the_weights_travel_in_checkpoints(operator, tmp_path):
    trainer = make_trainer(tmp_path, max_epochs=0)
    trainer.fit(operator, train_dataloaders=loader())  # attaches the model; no step is taken
    operator.anchor_weights = [0.7, 0.2]
    trainer.save_checkpoint(tmp_path / "anchored.ckpt")
    assert OperatorModule.load_from_checkpoint(tmp_path / "anchored.ckpt", weights_only=True).anchor_weights == [0.7, 0.2]

    checkpoint = torch.load(tmp_path / "anchored.ckpt", weights_only=True)
    del checkpoint["anchor_weights"]  # a checkpoint of an earlier version: no anchoring
    torch.save(checkpoint, tmp_path / "older.ckpt")
    assert OperatorModule.load_from_checkpoint(tmp_path / "older.ckpt", weights_only=True).anchor_weights == []
    checkpoint["anchor_weights"] = [1.5]
    torch.save(checkpoint, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match=r"anchor_weights must be a list of numbers in \[0, 1\]"):
        OperatorModule.load_from_checkpoint(tmp_path / "bad.ckpt", weights_only=True)


def squared_nrmse(operator, batch, step):
    """Sum over samples and channels of the squared nRMSE of the (anchored) prediction ``step`` ahead."""
    pred = operator.rollout(batch["fields"], batch["coords"], step)[:, -1]
    target = batch["targets"][:, step - 1]
    return float(((pred - target).pow(2).sum(1) / target.pow(2).sum(1)).sum())


def test_calibration_minimises_the_squared_error_of_real_predictions(operator):
    loaders = [loader(horizon=1), loader(horizon=2)]
    operator.anchor_weights = [0.9, 0.9]  # calibration ignores the weights in place
    report = calibrate_anchor(operator, loaders)
    weights = report["weights"]
    assert operator.anchor_weights == weights and len(weights) == 2
    assert all(0.0 < w < 1.0 for w in weights), weights  # some but not all of e_0 persists
    assert report["windows"] == {1: 36, 2: 16}  # 4 trajectories x (5 one-step + 4 two-step windows) at step 1
    assert calibrate_anchor(operator, loaders)["weights"] == weights

    # The fitted w_2 minimises the summed squared nRMSE of two-step predictions (the only windows at step 2).
    batch = next(iter(loader(horizon=2, batch_size=16)))
    errors = {}
    for shift in (-0.05, 0.0, 0.05):
        operator.anchor_weights = [weights[0], min(max(weights[1] + shift, 0.0), 1.0)]
        errors[shift] = squared_nrmse(operator, batch, 2)
    assert errors[0.0] < errors[-0.05] and errors[0.0] < errors[0.05], errors
    operator.anchor_weights = [0.0, 0.0]
    assert errors[0.0] < squared_nrmse(operator, batch, 2)
