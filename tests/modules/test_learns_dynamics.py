"""Stage 1 then stage 2 on small generated Burgers data: the model must learn dynamics, not just reconstruct."""

import lightning.pytorch as pl
import pytest

from upt_lightning.callbacks import InverseLossCurriculum
from upt_lightning.data import GridDataModule
from upt_lightning.modules import AutoencoderModule, OperatorModule

QUIET = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False)


@pytest.mark.slow
def test_two_stage_fit_beats_persistence_at_the_last_rollout_step(tmp_path):
    pl.seed_everything(0)
    data = GridDataModule(tmp_path / "burgers.h5", generate="burgers2d",
                          generate_options=dict(num=64, resolution=16, num_steps=21, seed=0, progress=False),
                          batch_size=16, rollout_horizon=10)
    data.prepare_data()
    data.setup("fit")
    autoencoder = AutoencoderModule(
        data.field_spec, data.coord_dim, data.grid_shape,
        encoder=dict(kind="grid", patch_size=4, dim=32, depth=1, num_heads=2),
        decoder=dict(dim=32, depth=2, num_heads=2, num_frequencies=4),
        latent_tokens=16, latent_dim=16, lambda_cycle=0.0, lr=3e-3, num_queries=128,
    )
    stage1 = pl.Trainer(max_epochs=8, **QUIET)
    stage1.fit(autoencoder, datamodule=data)
    stage1.save_checkpoint(tmp_path / "autoencoder.ckpt")

    operator = OperatorModule(autoencoder_ckpt=str(tmp_path / "autoencoder.ckpt"),
                              operator=dict(dim=32, depth=2, num_heads=2), lambda_inv_enc=0.01,
                              lambda_inv_dec=0.01, inverse_loss_warmup_epochs=1, num_queries=128, lr=2e-3)
    stage2 = pl.Trainer(max_epochs=8, callbacks=[InverseLossCurriculum()], **QUIET)
    stage2.fit(operator, datamodule=data)
    results = stage2.validate(operator, datamodule=data, verbose=False)
    metrics = {key.split("/dataloader_idx")[0]: value for loader in results for key, value in loader.items()}
    model, baseline = metrics["val/rollout_nrmse_last"], metrics["val/persistence_rollout_nrmse_last"]
    assert model < baseline, (model, baseline)
    # Learned dynamics, not a frozen copy of the input: the rollout error is well below persistence.
    assert model < 0.75 * baseline, (model, baseline)
