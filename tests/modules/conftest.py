import pytest

from helpers.modules import loader, make_trainer, tiny_autoencoder


@pytest.fixture(scope="session")
def autoencoder_ckpt(tmp_path_factory):
    """A stage-1 checkpoint from a real (very short) fit."""
    path = tmp_path_factory.mktemp("stage1") / "autoencoder.ckpt"
    model = tiny_autoencoder(sampling={"num_queries": 32})
    trainer = make_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader())
    trainer.save_checkpoint(path)
    return path
