"""Checkpoints carry everything needed for inference; rollouts in latent and physical space."""

import shutil

import pytest
import torch

from helpers.modules import TINY_OPERATOR, grid_coords, loader, make_trainer, travelling_waves
from upt_lightning.errors import CheckpointError
from upt_lightning.modules import AutoencoderModule, OperatorModule

STATS = {
    "field_mean": torch.tensor([0.3, -0.2]),
    "field_std": torch.tensor([2.0, 0.5]),
    "coord_min": torch.tensor([0.0, 0.0]),
    "coord_max": torch.tensor([1.0, 1.0]),
}


@pytest.fixture()
def trained_operator(autoencoder_ckpt, tmp_path):
    model = OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR)
    model.normalizer.set_stats(STATS, dt=0.1)
    trainer = make_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader())
    path = tmp_path / "operator.ckpt"
    trainer.save_checkpoint(path)
    return model, path


def raw_inputs(batch=2):
    frames = travelling_waves(batch, 1)[:, 0]
    return frames, grid_coords().expand(batch, -1, -1)


def test_load_from_checkpoint_alone_reproduces_raw_predictions(trained_operator, autoencoder_ckpt, tmp_path):
    model, path = trained_operator
    # The stage-1 file is gone: the operator checkpoint must not need it.
    moved = tmp_path / "elsewhere.ckpt"
    shutil.move(autoencoder_ckpt, moved)
    try:
        loaded = OperatorModule.load_from_checkpoint(path, weights_only=True)
    finally:
        shutil.move(moved, autoencoder_ckpt)
    assert torch.equal(loaded.normalizer.field_std, STATS["field_std"])
    fields, coords = raw_inputs()
    model.eval()
    loaded.eval()
    expected = model(fields, coords)
    torch.testing.assert_close(loaded(fields, coords), expected)
    # Raw in, raw out: the stored statistics wrap the normalised model on both sides.
    norm = loaded.normalizer
    points = norm.normalize_coords(coords)
    with torch.no_grad():
        latent = loaded.step(loaded.encode(norm.normalize_fields(fields), points, loaded.encoder_meta(None)),
                             norm.normalize_dt(0.1).expand(2))
        manual = norm.denormalize_fields(loaded.decode(latent, points))
    torch.testing.assert_close(expected, manual)


def test_checkpoints_of_the_removed_anchored_decoding_load_without_weights_and_are_refused_with_them(
        trained_operator, tmp_path):
    model, path = trained_operator
    checkpoint = torch.load(path, weights_only=True)
    assert "anchor_weights" not in checkpoint and "input_noise" not in checkpoint["hyper_parameters"]
    # An earlier version saved anchor_weights (empty: no anchoring) and the input_noise hyperparameter.
    checkpoint["anchor_weights"] = []
    checkpoint["hyper_parameters"]["input_noise"] = 0.0
    torch.save(checkpoint, tmp_path / "older.ckpt")
    fields, coords = raw_inputs()
    older = OperatorModule.load_from_checkpoint(tmp_path / "older.ckpt", weights_only=True).eval()
    torch.testing.assert_close(older(fields, coords), model.eval()(fields, coords))
    checkpoint["anchor_weights"] = [0.7, 0.2]  # fitted weights: its predictions relied on them
    torch.save(checkpoint, tmp_path / "anchored.ckpt")
    with pytest.raises(CheckpointError, match=r"anchor_weights \[0.7, 0.2\] of anchored decoding .* was removed"):
        OperatorModule.load_from_checkpoint(tmp_path / "anchored.ckpt", weights_only=True)


def test_rollout_decodes_only_requested_steps_and_any_points(trained_operator):
    model, _ = trained_operator
    model.eval()
    fields, coords = raw_inputs()
    full = model.rollout(fields, coords, steps=4)
    assert full.shape == (2, 4, 64, 2)
    picked = model.rollout(fields, coords, steps=4, decode_steps=[2, 4])
    torch.testing.assert_close(picked, full[:, [1, 3]])
    torch.testing.assert_close(model(fields, coords), full[:, 0])
    fine = grid_coords((16, 16)).expand(2, -1, -1)
    super_res = model.rollout(fields, coords, steps=4, query_points=fine, decode_steps=[4])
    assert super_res.shape == (2, 1, 256, 2) and torch.isfinite(super_res).all()


@pytest.mark.parametrize("mode", ["latent", "physical"])
def test_rollout_returns_decode_steps_in_the_order_asked_for(trained_operator, mode):
    model, _ = trained_operator
    model.eval()
    fields, coords = raw_inputs()
    full = model.rollout(fields, coords, steps=4, mode=mode)
    torch.testing.assert_close(model.rollout(fields, coords, steps=4, mode=mode, decode_steps=[3, 1]),
                               full[:, [2, 0]])
    torch.testing.assert_close(model.rollout(fields, coords, steps=4, mode=mode, decode_steps=(4, 2, 3)),
                               full[:, [3, 1, 2]])


@pytest.mark.parametrize("decode_steps, message", [
    ([2, 2], r"step\(s\) \[2\] more than once"),
    ([1, 5], r"step\(s\) \[5\] outside 1\.\.4"),
    ([0], r"step\(s\) \[0\] outside 1\.\.4"),
    ([], "empty"),
    ([1.5], "integer steps"),
])
def test_rollout_refuses_duplicate_or_out_of_range_decode_steps(trained_operator, decode_steps, message):
    model, _ = trained_operator
    fields, coords = raw_inputs()
    with pytest.raises(ValueError, match=message):
        model.rollout(fields, coords, steps=4, decode_steps=decode_steps)


def test_physical_rollout_reencodes_every_step(trained_operator):
    model, _ = trained_operator
    model.eval()
    fields, coords = raw_inputs()
    encodes = []
    handle = model.encoder.register_forward_hook(lambda *_: encodes.append(1))
    latent = model.rollout(fields, coords, steps=3, mode="latent")
    n_latent = len(encodes)
    decodes = []
    decoder_handle = model.decoder.register_forward_hook(lambda *_: decodes.append(1))
    physical = model.rollout(fields, coords, steps=3, mode="physical")
    handle.remove()
    decoder_handle.remove()
    assert len(decodes) == 3  # one decode per step, reused for the output and the re-encoding
    assert n_latent == 1 and len(encodes) - n_latent == 3  # initial encode + after steps 1 and 2
    # One step is the same either way; later steps differ because re-encoding is not exact.
    torch.testing.assert_close(physical[:, 0], latent[:, 0])
    assert not torch.allclose(physical[:, 2], latent[:, 2])


def test_stage1_checkpoint_with_other_fields_is_rejected_by_data(autoencoder_ckpt):
    from lightning.pytorch import LightningDataModule

    class OtherFields(LightningDataModule):
        field_spec = {"rho": 1, "p": 1}
        stats = None

        def train_dataloader(self):
            return loader()

    model = OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR)
    with pytest.raises(ValueError, match="differ from the model"):
        make_trainer(fast_dev_run=1).fit(model, datamodule=OtherFields())


def test_missing_or_foreign_stage1_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train stage 1"):
        OperatorModule(autoencoder_ckpt=str(tmp_path / "nope.ckpt"))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        OperatorModule(autoencoder_ckpt=str(junk))


def test_bf16_autocast_clipping_and_accumulation_train(autoencoder_ckpt):
    model = OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR,
                           loss={"lambda_inv_enc": 0.1, "lambda_inv_dec": 0.1, "inverse_loss_max_weight": 0.1},
                           sampling={"num_queries": 32})
    before = {k: v.clone() for k, v in model.operator.state_dict().items()}
    frozen_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    trainer = make_trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=0, precision="bf16-mixed",
                           gradient_clip_val=0.5, accumulate_grad_batches=2)
    trainer.fit(model, train_dataloaders=loader(num=8, batch_size=2))
    assert trainer.global_step == 2  # 4 batches accumulated in pairs
    changed = [k for k, v in model.operator.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the operator did not train under bf16"
    assert all(torch.equal(v, frozen_before[k]) for k, v in model.encoder.state_dict().items())
    assert all(torch.isfinite(p).all() for p in model.operator.parameters())


def test_autoencoder_checkpoint_round_trip(autoencoder_ckpt):
    model = AutoencoderModule.load_from_checkpoint(autoencoder_ckpt, weights_only=True)
    fields, coords = raw_inputs()
    recon = model.eval()(fields, coords)
    assert recon.shape == fields.shape and torch.isfinite(recon).all()
