"""stage2.input_noise: the operator's training input is the encoded latent plus seeded Gaussian noise of the
asked size; evaluation and the targets stay clean."""

import pytest
import torch

from helpers.modules import TINY_OPERATOR, loader, make_trainer
from upt_lightning.modules import OperatorModule


def operator_inputs(model, batches: int = 2) -> list[torch.Tensor]:
    """The latents the operator received in ``batches`` training steps."""
    seen = []
    handle = model.operator.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    make_trainer(max_steps=batches, limit_val_batches=0).fit(model, train_dataloaders=loader())
    handle.remove()
    return seen


def build(autoencoder_ckpt, noise):
    torch.manual_seed(0)
    return OperatorModule(autoencoder_ckpt=str(autoencoder_ckpt), operator=TINY_OPERATOR, num_queries=24,
                          lambda_inv_enc=0.0, lambda_inv_dec=0.0, input_noise=noise)


def test_training_input_gets_noise_of_the_asked_size_reproducibly(autoencoder_ckpt):
    clean = operator_inputs(build(autoencoder_ckpt, 0.0))
    noisy = operator_inputs(build(autoencoder_ckpt, 0.1))
    again = operator_inputs(build(autoencoder_ckpt, 0.1))
    for c, n, a in zip(clean, noisy, again):
        ratio = float((n - c).std() / c.std())
        assert 0.08 < ratio < 0.12, ratio  # the frozen encoder and the unshuffled batches are the same in all runs
        torch.testing.assert_close(n, a)  # seeded by seed, rank and batch index
    assert not torch.allclose(noisy[0] - clean[0], noisy[1] - clean[1])  # a fresh draw per batch


def test_evaluation_is_clean_and_bad_values_are_refused(autoencoder_ckpt):
    model = build(autoencoder_ckpt, 0.5).eval()
    batch = next(iter(loader()))
    fields, coords = batch["fields"][:2], batch["coords"][:2]
    torch.testing.assert_close(model.rollout(fields, coords, 2), build(autoencoder_ckpt, 0.0).eval().rollout(fields, coords, 2))
    with pytest.raises(ValueError, match="input_noise must be >= 0"):
        build(autoencoder_ckpt, -0.1)
